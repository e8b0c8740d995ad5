from __future__ import annotations

import re
from pathlib import Path

from infra.kafka.broker import broker_argv, broker_properties, new_cluster_id, render_properties, storage_format_argv


def test_single_node_kraft_properties_listen_on_the_given_host_only() -> None:
    props = broker_properties("127.0.0.1", 19092, 19093, Path("/data/log"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"] == "/data/log"


def test_rendered_properties_are_one_key_per_line() -> None:
    text = render_properties({"a.b": "1", "c": "x,y"})
    assert text == "a.b=1\nc=x,y\n"


def test_cluster_ids_have_kafkas_format_and_differ() -> None:
    ids = {new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id) for cluster_id in ids)


def test_no_cluster_id_starts_with_a_dash() -> None:
    # One in 64 random ids would: kafka-storage then read `-t -xyz` as a missing argument (a CI
    # run failed that way). 2,000 draws miss a dash-first id with probability (63/64)^2000 ~ 2e-14.
    assert not [cluster_id for cluster_id in (new_cluster_id() for _ in range(2000)) if cluster_id.startswith("-")]


def test_command_lines_name_the_main_classes_and_the_config() -> None:
    config = Path("/x/server.properties")
    fmt = storage_format_argv("java", Path("/libs"), "256m", "abc", config)
    assert fmt[fmt.index("kafka.tools.StorageTool") + 1:] == ["format", "-t", "abc", "-c", str(config),
                                                              "--ignore-formatted"]
    run = broker_argv("java", Path("/libs"), "512m", config)
    assert run[-2:] == ["kafka.Kafka", str(config)]
    assert "-Xmx512m" in run and "/libs/*" in run
