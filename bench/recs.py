"""Recommendations benchmark: offline quality against popularity and random, and the latency of
GET /v1/reels on a real local stack with Milvus Lite, in one run.

    .venv/bin/python -m bench.recs [--users 1500] [--videos 800] [--seed 1]       # quality only
    .venv/bin/python -m bench.recs --latency [--rate 100] [--seconds 30]          # and latency

1. Quality (no I/O). Simulated users with planted tastes: every video has one of --tastes
   tastes (a tag and one of a few uploaders of that taste) and a Zipf popularity; every user has
   a primary and a secondary taste and watches, one session after another, mostly videos of those
   tastes (picked by popularity), sometimes anything popular; they finish videos of their tastes
   (completion ~ Beta(5, 1.5)) and drop the others early (Beta(1.2, 4)). The last --held-out
   sessions of each user are held out. The same training part feeds three rankers, each asked
   for 10 videos the user has not watched: ours (embeddings from processors/recs/embeddings.py,
   the user's embedding from their history, candidates and ranking as GET /v1/reels does them,
   producers/reels.py with the default weights; heat = the training views), popularity (heat
   alone) and random. Prints recall@10 and NDCG@10 of each and the ratios.
2. Latency (--latency). Kafka and the S3 server (`LocalStack`), the sink, the recs worker (Milvus
   Lite) and the ingest API each as its own process, as `lustrax up` runs them. --videos published
   videos (lifecycle events on their topics) and the simulated users' watch ticks through
   `POST /v1/events/batch`; once the worker has applied every tick, `lustrax recs train`; then
   vegeta (open loop, the load tool of bench.ingest) sends `GET /v1/reels?limit=20` at --rate
   requests/s for --seconds, each request with the token of another user, after a warm-up; and the same for `GET /v1/trending` (the API's
   other ClickHouse-backed read, heat alone: the baseline). Prints p50/p99 of both.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from bench import percentile
from bench.ingest import attack, ensure_vegeta
from common.process import free_port, stop_process_groups
from common.settings import Settings, load_settings
from common.tokens import issue_age_token, issue_token
from infra.clickhouse.analyst import run_sql
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.s3.layout import new_video_id, public_url
from lustrax.recs import train_now
from lustrax.services import PROJECT_SERVICES, ServiceProcess
from lustrax.stack import LocalStack
from schemas.codec import encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA
from processors.recs.embeddings import Watch, learn_video_embeddings, user_embedding
from processors.recs.history import merged, recent
from producers.reels import Weights, rank

K = 10


@dataclass(frozen=True)
class World:
    video_taste: list[int]
    video_tags: list[list[str]]
    video_uploader: list[str]
    sessions: dict[str, list[Watch]]  # per user, in watch order
    tastes: dict[str, tuple[int, int]]


def simulate(users: int, videos: int, tastes: int, seed: int) -> World:
    rng = np.random.default_rng(seed)
    video_taste = [int(t) for t in rng.integers(0, tastes, size=videos)]
    popularity = 1.0 / np.arange(1, videos + 1) ** 0.8
    popularity = popularity[rng.permutation(videos)]
    by_taste = [np.flatnonzero(np.asarray(video_taste) == t) for t in range(tastes)]
    tags = [[f"taste-{t}", f"tag-{int(rng.integers(0, 20))}"] for t in video_taste]
    uploaders = [f"uploader-{t}-{int(rng.integers(0, 4))}" for t in video_taste]
    sessions: dict[str, list[Watch]] = {}
    planted: dict[str, tuple[int, int]] = {}
    everything = np.arange(videos)
    for u in range(users):
        user = f"user-{u}"
        primary, secondary = (int(x) for x in rng.choice(tastes, size=2, replace=False))
        planted[user] = (primary, secondary)
        seen: set[int] = set()
        watches = []
        for step in range(int(rng.integers(15, 50))):
            pick = rng.random()
            pool = by_taste[primary] if pick < 0.65 else by_taste[secondary] if pick < 0.8 else everything
            pool = np.asarray([v for v in pool if v not in seen])
            if pool.size == 0:
                continue
            weights = popularity[pool] / popularity[pool].sum()
            video = int(rng.choice(pool, p=weights))
            seen.add(video)
            liked = video_taste[video] in (primary, secondary)
            done = float(rng.beta(5, 1.5) if liked else rng.beta(1.2, 4))
            watches.append(Watch(user, f"video-{video}", done, step * 60_000))
        sessions[user] = watches
    return World(video_taste, tags, uploaders, sessions, planted)


def split(world: World, held_out: int) -> tuple[list[Watch], dict[str, list[Watch]], dict[str, set[str]]]:
    train: list[Watch] = []
    history: dict[str, list[Watch]] = {}
    relevant: dict[str, set[str]] = {}
    for user, watches in world.sessions.items():
        if len(watches) <= held_out:
            continue
        history[user] = watches[:-held_out]
        train += history[user]
        relevant[user] = {w.video_id for w in watches[-held_out:]}
    return train, history, relevant


def recall_ndcg(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    hits = [1.0 if video in relevant else 0.0 for video in ranked[:K]]
    recall = sum(hits) / min(K, len(relevant))
    dcg = sum(hit / math.log2(i + 2) for i, hit in enumerate(hits))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(K, len(relevant))))
    return recall, dcg / ideal


def quality(args: argparse.Namespace, settings: Settings) -> None:
    world = simulate(args.users, args.videos, args.tastes, args.seed)
    train, history, relevant = split(world, args.held_out)
    began = time.perf_counter()
    vectors = learn_video_embeddings(train, settings.recs_dim)
    trained_s = time.perf_counter() - began
    ids = list(vectors)
    matrix = np.stack([vectors[v] for v in ids])
    heat = Counter(w.video_id for w in train)
    hot = dict(heat.most_common(settings.recs_hot_candidates))
    weights = Weights(settings.recs_weight_heat, settings.recs_weight_match, settings.recs_weight_explore)
    rng = random.Random(args.seed)
    every_video = [f"video-{v}" for v in range(args.videos)]
    by_popularity = sorted(every_video, key=lambda v: (-heat.get(v, 0), v))
    totals = {"ours": [0.0, 0.0], "popularity": [0.0, 0.0], "random": [0.0, 0.0]}
    for user, watches in history.items():
        seen = {w.video_id for w in watches}
        kept = merged({}, ((w.video_id, w.completion, w.last_ms) for w in watches), settings.recs_history_size)
        me = user_embedding(recent(kept, settings.recs_recent_size), vectors)
        matches: dict[str, float] = {}
        if me is not None:
            cosines = matrix @ me
            nearest = np.argsort(-cosines)[:settings.recs_candidates + len(seen)]
            matches = {ids[i]: float(cosines[i]) for i in nearest}
        # The hot candidates get their match too, as the API computes it.
        matches |= {v: float(vectors[v] @ me) for v in hot if me is not None and v in vectors}
        ours = [item.video_id for item in rank(matches, hot, weights, K, rng.random, excluded=seen)]
        popular = [v for v in by_popularity if v not in seen][:K]
        unseen = [v for v in every_video if v not in seen]
        anything = rng.sample(unseen, K)
        for name, ranked in (("ours", ours), ("popularity", popular), ("random", anything)):
            recall, ndcg = recall_ndcg(ranked, relevant[user])
            totals[name][0] += recall
            totals[name][1] += ndcg
    n = len(history)
    print(f"quality: {n} users, {args.videos} videos, {args.tastes} tastes, last {args.held_out} sessions held out, "
          f"{len(train)} training watches; embeddings of {settings.recs_dim} dims trained in {trained_s:.2f} s")
    for name, (recall, ndcg) in totals.items():
        print(f"  {name:<11} recall@10 {recall / n:.4f}   NDCG@10 {ndcg / n:.4f}")
    ours, popular = totals["ours"], totals["popularity"]
    print(f"  ours / popularity: recall@10 x{ours[0] / popular[0]:.2f}, NDCG@10 x{ours[1] / popular[1]:.2f}  "
          f"(goal: recall@10 >= x1.5)")


def publish(settings: Settings, world: World) -> list[str]:
    """The world's videos as published videos (their lifecycle events on the topics); their ids."""
    ids = [new_video_id() for _ in world.video_taste]
    now = datetime.now(UTC) - timedelta(hours=1)
    messages = []
    for index, video_id in enumerate(ids):
        common = {"video_id": video_id, "title": f"Video {index}", "uploader_id": world.video_uploader[index],
                  "premium": False}
        uploaded = new_record("VideoUploaded", "bench", {
            **common, "content_type": "video/mp4", "size_bytes": 1000, "source_bucket": settings.s3_uploads_bucket,
            "source_key": f"sources/{video_id}", "tags": world.video_tags[index]}, occurred_at=now)
        published = new_record("VideoPublished", "bench", {
            **common, "video_url": public_url(settings.public_base_url, video_id, False, "master.m3u8"),
            "thumbnail": public_url(settings.public_base_url, video_id, False, "thumb.jpg"),
            "published_at": now + timedelta(seconds=index)}, occurred_at=now + timedelta(seconds=index))
        messages += [OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, video_id.encode(), encode(schema, record))
                     for schema, record in (("VideoUploaded", uploaded), ("VideoPublished", published))]
    produce_acknowledged(settings.kafka_bootstrap, messages, timeout_s=60)
    return ids


def send_ticks(settings: Settings, world: World, ids: list[str]) -> int:
    """Every session of the world as one watch tick (its furthest position) through the API."""
    token = issue_token(settings.jwt_signing_secret, "bench", ("service",), 3600)
    now_ms = int(time.time() * 1000)
    events = [{"type": "watch_tick", "video_id": ids[int(w.video_id.removeprefix("video-"))], "user_id": w.user_id,
               "session_id": f"{w.user_id}-{i}", "position_ms": int(w.completion * 60_000), "duration_ms": 60_000,
               "occurred_at": now_ms - 3_600_000 + w.last_ms // 60}
              for watches in world.sessions.values() for i, w in enumerate(watches)]
    with httpx.Client(base_url=settings.ingest_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
        for start in range(0, len(events), 500):
            answer = api.post("/v1/events/batch", json={"events": events[start:start + 500]})
            assert answer.status_code == 202, answer.text
    return len(events)


def targets_file(path: Path, settings: Settings, paths: list[str], users: list[str]) -> Path:
    """vegeta targets: the paths in turn, each request with the token of the next user."""
    age = issue_age_token(settings.age_token_key, "self_declaration", "ZZ", settings.age_token_ttl_s)[0]
    with path.open("w") as out:
        for i, user in enumerate(users):
            token = issue_token(settings.jwt_signing_secret, user, (), 3600)
            out.write(json.dumps({"method": "GET", "url": f"{settings.ingest_url}{paths[i % len(paths)]}",
                                  "header": {"Authorization": [f"Bearer {token}"], "X-Age-Token": [age]}}) + "\n")
    return path


def latency(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
                             s3_endpoint=f"http://127.0.0.1:{free_port()}", edge_port=free_port(),
                             ingest_port=free_port(), sink_query_port=free_port(), recs_web_port=free_port(),
                             recs_milvus_port=free_port())
    stack = LocalStack(settings, with_services=False)
    print(f"latency: starting a local stack under {home} ...", file=sys.stderr)
    stack.start()
    services = [ServiceProcess(settings, PROJECT_SERVICES[name], "127.0.0.1", port) for name, port in
                (("sink", settings.sink_query_port), ("recs", settings.recs_web_port),
                 ("ingest", settings.ingest_port))]
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        world = simulate(args.users, args.videos, args.tastes, args.seed)
        ids = publish(settings, world)
        ticks = send_ticks(settings, world, ids)
        deadline = time.monotonic() + 300
        while int(run_sql(settings, "SELECT count() FROM {db}.watch_ticks", {}, False)[1][0][0]) < ticks:
            assert time.monotonic() < deadline, "the sink did not store the ticks in time"
            time.sleep(1)
        health = f"http://127.0.0.1:{settings.recs_web_port}/healthz"
        while httpx.get(health, timeout=10).json()["ticks"] < ticks:  # the worker's tick backlog, not measured
            assert time.monotonic() < deadline, "the recs worker did not apply the ticks in time"
            time.sleep(1)
        report = train_now(settings)
        print(f"latency: {len(ids)} published videos, {ticks} watch ticks of {len(world.sessions)} users; "
              f"trained: {report}", file=sys.stderr)
        vegeta = ensure_vegeta(settings)
        users = list(world.sessions)
        rng = random.Random(args.seed)
        for label, paths in (("GET /v1/reels?limit=20", ["/v1/reels?limit=20"]),
                             ("GET /v1/trending?limit=20 (baseline)", ["/v1/trending?limit=20"])):
            warm = targets_file(home / "warm.jsonl", settings, paths,
                                rng.choices(users, k=int(args.rate * args.warmup)))
            attack(vegeta, warm, args.rate, args.warmup, "200")
            measured = targets_file(home / "targets.jsonl", settings, paths,
                                    rng.choices(users, k=int(args.rate * args.seconds)))
            values = attack(vegeta, measured, args.rate, args.seconds, "200")
            print(f"latency at {args.rate:.0f}/s for {args.seconds:.0f} s, {label}: "
                  f"p50 {percentile(values, 0.5) * 1000:6.2f} ms   p99 {percentile(values, 0.99) * 1000:6.2f} ms   "
                  f"max {max(values) * 1000:6.2f} ms   (n={len(values)}; goal for reels: p99 < 50 ms)")
    finally:
        stop_process_groups([s.process.pid for s in services if s.process is not None and s.process.pid])
        for service in services:
            if service.process is not None:
                service.process.stop()
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--videos", type=int, default=800)
    parser.add_argument("--tastes", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", action="store_true", help="also measure GET /v1/reels on a real stack")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    quality(args, load_settings())  # the recommendations settings only: nothing is written
    if args.latency:
        latency(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
