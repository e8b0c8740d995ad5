"""Producers: the ingest API and clients that turn requests into Avro events on Kafka."""
