"""Milvus through pymilvus: Milvus Lite embedded in the recs worker by default, a server URI in production."""
