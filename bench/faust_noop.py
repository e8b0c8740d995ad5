"""A Faust agent that only counts: the framework's own ceiling on this machine, for bench/heat.

    .venv/bin/python -m bench.faust_noop BOOTSTRAP N [SKIP] [uvloop|asyncio]

Consumes the engagement topics from the start with the project's transport, on the heat worker's
event loop (uvloop) unless told otherwise, and prints `noop events/s X`: from the first event taken
after the first SKIP to the N-th after them (the earlier backlogs of the same run are taken first,
off the clock). NO_CYTHON=1 in the environment turns Faust's Cython extensions off.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid

import faust
import mode.loop

from bench.heat import ENGAGEMENT
from processors.faust_internals import Transport
from schemas.topics import TOPIC_BY_SCHEMA


def main() -> None:
    bootstrap, expected = sys.argv[1], int(sys.argv[2])
    skip = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if (sys.argv[4] if len(sys.argv) > 4 else "uvloop") == "uvloop":
        mode.loop.use("uvloop")  # as the heat worker runs
    app = faust.App(f"bench-noop-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}", web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True,
                    datadir=tempfile.mkdtemp(prefix="bench-noop-"))
    app.transport = Transport(app.conf.broker_consumer, app)
    topic = app.topic(*(TOPIC_BY_SCHEMA[s].name for s in ENGAGEMENT), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    taken, started = 0, 0.0

    @app.agent(topic)
    async def count(stream: faust.StreamT) -> None:
        nonlocal taken, started
        async for _ in stream.events():
            taken += 1
            if taken <= skip:
                continue
            started = started or time.perf_counter()
            if taken - skip >= expected:
                print(f"noop events/s {expected / (time.perf_counter() - started):.0f}", flush=True)
                os._exit(0)  # the figure is out: no graceful Faust shutdown needed

    sys.argv[1:] = ["worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
