"""Apache Kafka (KRaft, single combined broker+controller) for the local stack."""
