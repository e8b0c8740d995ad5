"""The S3-compatible server of the local stack (versitygw, posix backend) and the project's buckets."""
