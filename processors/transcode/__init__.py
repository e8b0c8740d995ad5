"""Transcoding of uploads into HLS ladders."""
