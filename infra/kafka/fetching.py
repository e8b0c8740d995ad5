"""How the project's processing consumers fetch: a fetch waits until FETCH_MIN_BYTES are there or
FETCH_MAX_WAIT_MS have passed, instead of returning the moment one record is (Kafka's default).
A consumer that keeps up otherwise asks again after every handful of records, and on the 2-core
reference machine the broker's CPU went to answering those fetches (processors/faust_internals.py
5. has the figures). The Faust workers and the ClickHouse sink fetch this way; the gateway's
fan-out does not (a frame's latency is what it is for).
"""

FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 100
