"""`lustrax`: the command line of the project (local stack, operations, analysts)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from common.errors import LustraxError
from common.process import tail
from common.settings import Settings, load_settings


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    if args.detach:
        return _up_detached(settings)
    from lustrax.stack import LocalStack, running_state

    state = running_state(settings)
    if state:
        raise LustraxError(f"a stack is already running (pid {state['supervisor_pid']}); `lustrax down` stops it")
    # Ctrl-C and `lustrax down` (SIGTERM) both stop the stack in order, even when started from a
    # shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    stack = LocalStack(settings)
    print(f"lustrax: starting the local stack (state in {settings.home}) ...", flush=True)
    try:
        endpoints = stack.start()
        for endpoint in endpoints:
            print(f"  {endpoint.name:<11} {endpoint.address:<45} {endpoint.detail}")
        print(f"lustrax: ready in {stack.timings['ready']:.1f} s; logs in {settings.logs_dir}; Ctrl-C stops",
              flush=True)
        stack.supervise()  # restarts what exits; returns only through KeyboardInterrupt
    except KeyboardInterrupt:
        print("\nlustrax: stopping ...", flush=True)
        began = time.monotonic()
        stack.stop()
        print(f"lustrax: stopped in {time.monotonic() - began:.1f} s", flush=True)
        return 0
    finally:
        stack.stop()
    return 0


def _up_detached(settings: Settings) -> int:
    """Run `lustrax up` as a background supervisor and return once it is ready."""
    from lustrax.stack import read_state, state_file

    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "lustrax.log"
    state_file(settings).unlink(missing_ok=True)
    with log_path.open("ab") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "lustrax.cli", "up"], stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + settings.startup_timeout_s + 1200  # first run may download and build
    while time.monotonic() < deadline:
        state = read_state(settings)
        if state and state.get("ready") and state.get("supervisor_pid") == supervisor.pid:
            print(tail(log_path, len(state.get("endpoints", [])) + 1))  # type: ignore[arg-type]
            print(f"lustrax: running in the background (pid {supervisor.pid}); `lustrax down` stops it")
            return 0
        if supervisor.poll() is not None:
            raise LustraxError(f"the stack failed to start: {tail(log_path, 1)} (log: {log_path})")
        time.sleep(0.3)
    supervisor.terminate()
    raise LustraxError(f"the stack did not become ready in time (log: {log_path})")


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.stack import stop_running_stack

    print("lustrax: stopped" if stop_running_stack(settings) else "lustrax: nothing is running")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.stack import probe_components, read_state, running_state

    results = probe_components(settings)
    state = running_state(settings)
    supervised = dict(state["components"]) if state else {}
    ok_all = all(ok for ok, _ in results.values())
    for name, (ok, detail) in results.items():
        entry = supervised.get(name)
        word = "ready" if ok else "DOWN"
        if entry is not None:
            if entry["state"] == "failed":
                word, ok_all = "FAILED", False
                detail = f"{detail}; given up after repeated failures (log: {entry['log']})"
            detail = f"{detail}  restarts: {entry['restarts']}"
        print(f"  {name:<11} {word:<6} {detail}")
    if state is None and read_state(settings) is not None:
        # A state file without its supervisor: whatever still answers is not being kept up.
        print("  supervisor  DOWN   not running (`lustrax down` cleans up, `lustrax up` starts again)")
        ok_all = False
    return 0 if ok_all else 1


def cmd_restart(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.stack import request_restart

    entry = request_restart(settings, args.component, settings.startup_timeout_s + 30)
    print(f"lustrax: {args.component} restarted (pid {entry['pid']}, restarts: {entry['restarts']})")
    return 0


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.stack import LocalStack

    stack = LocalStack(settings)
    stack.install()
    print(f"lustrax: Kafka {settings.kafka_version} and versitygw {settings.versitygw_version} are installed "
          f"under {settings.cache_dir} ({stack.timings['install']:.1f} s)")
    return 0


def cmd_provision(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.provision import provision

    for endpoint in provision(settings):
        print(f"  {endpoint.name:<11} {endpoint.address:<45} {endpoint.detail}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.service == "ingest":
        from lustrax.review import human_reviewer
        from producers.app import serve

        serve(settings, reviewer=human_reviewer(settings))
    elif args.service == "gateway":
        from gateways.ws.server import serve_gateway

        serve_gateway(settings)
    elif args.service == "edge":
        from infra.edge.server import serve as serve_edge

        serve_edge(settings)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.processor == "transcode":
        from processors.transcode.agent import run_worker

        run_worker(settings)
    elif args.processor == "sink":
        from processors.sink.service import run_sink

        run_sink(settings)
    elif args.processor == "heat":
        from processors.heat_score.agent import run_worker as run_heat_worker

        run_heat_worker(settings)
    elif args.processor == "moderation":
        from processors.moderation.agent import run_worker as run_moderation_worker

        run_moderation_worker(settings)
    elif args.processor == "recs":
        from processors.recs.worker import run_worker as run_recs_worker

        run_recs_worker(settings)
    elif args.processor == "takedown":
        from processors.takedown.agent import run_worker as run_takedown_worker

        run_takedown_worker(settings)
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from infra.clickhouse.analyst import format_table, run_sql

    if (args.query is None) == (args.file is None):
        raise LustraxError("give a QUERY or --file, not both")
    try:
        sql = Path(args.file).read_text() if args.file else args.query
    except OSError as exc:
        raise LustraxError(f"cannot read {args.file}: {exc.strerror}") from None
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LustraxError(f"--param takes NAME=VALUE, not {item!r}")
        parameters[name] = value
    columns, rows = run_sql(settings, sql, parameters)
    print(format_table(columns, rows))
    return 0


def cmd_recs(settings: Settings, args: argparse.Namespace) -> int:
    from lustrax.recs import train_now

    report = train_now(settings)
    print(f"lustrax: trained embeddings of {report['learned']} video(s) from {report['watches']} watch(es) of "
          f"{report['users']} user(s), {report['cold']} cold start, {report['removed']} removed, "
          f"in {report['seconds']:.1f} s")
    return 0


def cmd_retranscode(settings: Settings, args: argparse.Namespace) -> int:
    from processors.transcode.retranscode import retranscode

    event_id = retranscode(settings, args.video_id)
    print(f"lustrax: {args.video_id} queued for transcoding again (event {event_id})")
    return 0


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from infra.clickhouse.analyst import format_table
    from lustrax.dead_letters import list_dead_letters, parse_since, replay

    if args.action == "list":
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
        print(format_table(*list_dead_letters(settings, args.consumer, since)))
        return 0
    ids = replay(settings, args.id, args.consumer)
    print(f"lustrax: replayed {len(ids)} dead letter(s) onto their source topics: {', '.join(ids)}")
    return 0


def cmd_review(settings: Settings, args: argparse.Namespace) -> int:
    from infra.clickhouse.analyst import format_table
    from lustrax.review import review_decide, review_list

    if args.action == "list":
        print(format_table(*review_list(settings, args.url, args.limit)))
        return 0
    state = review_decide(settings, args.url, args.video_id, args.action == "approve", args.reason)
    print(f"lustrax: {args.video_id} {args.action}d: now {state}")
    return 0


def cmd_dmca(settings: Settings, args: argparse.Namespace) -> int:
    from infra.clickhouse.analyst import format_table
    from lustrax.trust import court_action, notice_show

    if args.action == "show":
        print(format_table(*notice_show(settings, args.url, args.notice_id)))
        return 0
    status = court_action(settings, args.url, args.notice_id, args.video, args.note)
    print(f"lustrax: court action recorded for {args.notice_id}: now {status}")
    return 0


def cmd_complaints(settings: Settings, args: argparse.Namespace) -> int:
    from infra.clickhouse.analyst import format_table
    from lustrax.trust import complaint_decide, complaint_list

    if args.action == "list":
        print(format_table(*complaint_list(settings, args.url, args.all, args.limit)))
        return 0
    status = complaint_decide(settings, args.url, args.complaint_id, args.action == "uphold", args.note)
    print(f"lustrax: {args.complaint_id}: now {status}")
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from common.tokens import issue_token

    ttl = min(3600, settings.jwt_max_ttl_s) if args.ttl is None else args.ttl
    if ttl > settings.jwt_max_ttl_s:
        raise LustraxError(f"--ttl {ttl} exceeds LUSTRAX_JWT_MAX_TTL_S ({settings.jwt_max_ttl_s} s): "
                           "the API would refuse the token")
    roles = ("admin",) if args.admin else ("service",) if args.service else ()
    print(issue_token(settings.jwt_signing_secret, args.user, roles, ttl))
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from common.tokens import issue_token
    from producers.simulate import simulate

    token = issue_token(settings.jwt_signing_secret, "simulator", ("service",), int(args.duration) + 3600)
    base_url = args.url or settings.ingest_url
    report = asyncio.run(simulate(base_url, token, args.rate, args.duration, args.users, args.videos, args.seed,
                                  progress=not args.quiet, video_ids=args.video_id))
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.by_type.items()))
    print(f"lustrax: sent {report.sent} events in {report.elapsed_s:.1f} s ({report.achieved_rate:.0f}/s); "
          f"failed {report.failed}; {kinds}")
    if report.last_error:
        print(f"lustrax: last error: {report.last_error}", file=sys.stderr)
    return 0 if report.failed == 0 else 1


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from lustrax.demo import demo_options, run_demo

    asyncio.run(run_demo(settings, demo_options(settings, args.url, args.gateway_url, args.simulate_seconds,
                                                args.rate, args.timeout, args.wait, args.clip_seconds)))
    return 0


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lustrax", description="LustraX Stream: local stack and operations")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack (Kafka, S3 server, ClickHouse) and the services")
    up.add_argument("--detach", action="store_true", help="run in the background; `lustrax down` stops it")
    up.set_defaults(handler=cmd_up)
    sub.add_parser("down", help="stop a running local stack").set_defaults(handler=cmd_down)
    sub.add_parser("status", help="what answers; exits non-zero while anything is down").set_defaults(
        handler=cmd_status)
    restart = sub.add_parser("restart", help="restart one component of the running stack and wait until it answers")
    restart.add_argument("component", help="kafka, s3, edge, ingest, transcode, sink, heat (heat-2, ... with LUSTRAX_HEAT_WORKERS), "
                         "moderation, gateway, recs")
    restart.set_defaults(handler=cmd_restart)
    sub.add_parser("setup", help="fetch Kafka (Maven) and build versitygw (Go) into the cache").set_defaults(
        handler=cmd_setup)
    sub.add_parser("provision", help="create topics and buckets, apply ClickHouse migrations (idempotent)"
                   ).set_defaults(handler=cmd_provision)
    serve = sub.add_parser("serve", help="run one of the project's services in the foreground")
    serve.add_argument("service", choices=["ingest", "gateway", "edge"])
    serve.set_defaults(handler=cmd_serve)
    worker = sub.add_parser("worker", help="run one of the stream processors (Faust worker) in the foreground")
    worker.add_argument("processor", choices=["transcode", "sink", "heat", "moderation", "recs", "takedown"])
    worker.set_defaults(handler=cmd_worker)
    sql = sub.add_parser("sql", help="run a read-only ClickHouse query and print a table")
    sql.add_argument("query", nargs="?", help="the SQL; {db} stands for the database")
    sql.add_argument("--file", help="read the SQL from a file (e.g. infra/clickhouse/queries/trending_now.sql)")
    sql.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a query parameter, for {NAME:Type} in the SQL")
    sql.set_defaults(handler=cmd_sql)
    recs = sub.add_parser("recs", help="recommendations (the recs worker of the running stack)")
    recs_actions = recs.add_subparsers(dest="action", required=True)
    recs_actions.add_parser("train", help="recompute the video and user embeddings now").set_defaults(
        handler=cmd_recs)
    again = sub.add_parser("retranscode", help="transcode one video again")
    again.add_argument("video_id")
    again.set_defaults(handler=cmd_retranscode)
    dead = sub.add_parser("dead-letters", help="messages consumers parked: list them, replay them once fixed")
    dead_actions = dead.add_subparsers(dest="action", required=True)
    listing = dead_actions.add_parser("list", help="dead letters, oldest first")
    listing.add_argument("--consumer", help="only those parked by this consumer (e.g. transcode, clickhouse-sink)")
    listing.add_argument("--since", help="only those parked since: a duration (30m, 2h, 7d) or an RFC 3339 time")
    listing.set_defaults(handler=cmd_dead_letters)
    replaying = dead_actions.add_parser("replay", help="put dead letters back on their source topic")
    replaying.add_argument("id", nargs="?", help="a dead letter's id (topic:partition:offset, from `list`)")
    replaying.add_argument("--consumer", help="every dead letter this consumer parked")
    replaying.set_defaults(handler=cmd_dead_letters)
    review = sub.add_parser("review", help="the human moderation queue (through the ingest API, as an admin)")
    review.add_argument("--url", help="ingest API base URL (default from settings)")
    review_actions = review.add_subparsers(dest="action", required=True)
    queue = review_actions.add_parser("list", help="videos waiting for a human, oldest first")
    queue.add_argument("--limit", type=_positive(int), default=50, help="at most this many (default 50)")
    queue.set_defaults(handler=cmd_review)
    approve = review_actions.add_parser("approve", help="approve a video in review: it is published")
    approve.add_argument("video_id")
    approve.add_argument("--reason", help="why (optional)")
    approve.set_defaults(handler=cmd_review)
    reject = review_actions.add_parser("reject", help="reject a video in review: it is never published")
    reject.add_argument("video_id")
    reject.add_argument("--reason", required=True, help="why (required)")
    reject.set_defaults(handler=cmd_review)
    dmca = sub.add_parser("dmca", help="DMCA notices (through the ingest API, as an admin)")
    dmca.add_argument("--url", help="ingest API base URL (default from settings)")
    dmca_actions = dmca.add_subparsers(dest="action", required=True)
    show = dmca_actions.add_parser("show", help="a notice and where each of its videos stands")
    show.add_argument("notice_id")
    show.set_defaults(handler=cmd_dmca)
    court = dmca_actions.add_parser("court-action", help="the claimant filed a court action: the restore stops")
    court.add_argument("notice_id")
    court.add_argument("--video", help="only this video of the notice (default: every one)")
    court.add_argument("--note", help="case number, court")
    court.set_defaults(handler=cmd_dmca)
    complaints = sub.add_parser("complaints", help="the complaint queue (through the ingest API, as an admin)")
    complaints.add_argument("--url", help="ingest API base URL (default from settings)")
    complaint_actions = complaints.add_subparsers(dest="action", required=True)
    complaint_queue = complaint_actions.add_parser("list", help="open complaints, oldest first; overdue flagged")
    complaint_queue.add_argument("--all", action="store_true", help="decided ones too")
    complaint_queue.add_argument("--limit", type=_positive(int), default=50, help="at most this many (default 50)")
    complaint_queue.set_defaults(handler=cmd_complaints)
    for action, text in (("uphold", "uphold a complaint: the video stays (or is taken) down"),
                         ("dismiss", "dismiss a complaint: a hidden video is restored")):
        decide = complaint_actions.add_parser(action, help=text)
        decide.add_argument("complaint_id")
        decide.add_argument("--note", help="why (optional)")
        decide.set_defaults(handler=cmd_complaints)
    token = sub.add_parser("token", help="print a bearer token for local use")
    token.add_argument("--user", required=True, help="the token subject (user id)")
    role = token.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="admin role: may act for any user")
    role.add_argument("--service", action="store_true", help="service role: may send events for any user")
    token.add_argument("--ttl", type=_positive(int),
                       help="lifetime in seconds (default 3600, or LUSTRAX_JWT_MAX_TTL_S if lower; at most that)")
    token.set_defaults(handler=cmd_token)
    sim = sub.add_parser("simulate", help="send realistic traffic through the ingest API")
    sim.add_argument("--rate", type=_positive(float), default=100.0, help="events per second (default 100)")
    sim.add_argument("--duration", type=_positive(float), default=60.0, help="seconds (default 60)")
    sim.add_argument("--users", type=_positive(int), default=200, help="distinct users (default 200)")
    sim.add_argument("--videos", type=_positive(int), default=50, help="distinct videos (default 50)")
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--url", help="ingest API base URL (default from settings)")
    sim.add_argument("--video-id", action="append", default=[], metavar="ID",
                     help="a real video to watch (repeatable; the first is the most popular)")
    sim.add_argument("--quiet", action="store_true", help="no progress line")
    sim.set_defaults(handler=cmd_simulate)
    demo = sub.add_parser("demo", help="on a running stack: upload a generated clip, follow it to publication, "
                          "send traffic, show the frames and the trending list (exits 1 naming a failed step)")
    demo.add_argument("--url", help="ingest API base URL (default from settings)")
    demo.add_argument("--gateway-url", help="WebSocket gateway URL (default from settings)")
    demo.add_argument("--simulate-seconds", type=_positive(float), default=15.0, help="traffic duration (default 15)")
    demo.add_argument("--rate", type=_positive(float), default=100.0, help="traffic events per second (default 100)")
    demo.add_argument("--timeout", type=_positive(float), default=300.0,
                      help="seconds from upload to publication before the demo fails (default 300)")
    demo.add_argument("--wait", type=_positive(float), default=30.0,
                      help="seconds to wait for like_update and trending after the traffic (default 30)")
    demo.add_argument("--clip-seconds", type=_positive(int), default=6, help="length of the generated clip (default 6)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(load_settings(), args))
    except LustraxError as exc:
        print(f"lustrax: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
