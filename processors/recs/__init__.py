"""Reels recommendations: embeddings learned from co-watching, user histories, the recs worker."""
