"""Moderation of transcoded videos before publication."""
