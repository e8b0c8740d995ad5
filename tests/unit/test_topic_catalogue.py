from __future__ import annotations

from schemas import EVENT_SCHEMAS
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_NAME, TOPICS


def test_every_topic_carries_a_known_schema_and_every_schema_has_a_topic() -> None:
    assert {spec.schema for spec in TOPICS} == set(EVENT_SCHEMAS)


def test_topics_are_keyed_by_video_and_have_explicit_partitions_and_retention() -> None:
    for spec in (*TOPICS, DEAD_LETTER_TOPIC):
        assert spec.key == "video_id"
        assert spec.partitions >= 1
        assert spec.config["cleanup.policy"] in {"delete", "compact"}
        if spec.config["cleanup.policy"] == "delete":
            assert int(spec.config["retention.ms"]) > 0 or spec.config["retention.ms"] == "-1"


def test_the_lifecycle_topics_keep_what_the_catalog_is_rebuilt_from() -> None:
    from catalog.feed import LIFECYCLE_TOPICS

    for name in LIFECYCLE_TOPICS:
        config = TOPIC_BY_NAME[name].config
        assert config["cleanup.policy"] == "compact" or config["retention.ms"] == "-1", name


def test_topic_names_are_unique() -> None:
    names = [spec.name for spec in (*TOPICS, DEAD_LETTER_TOPIC)]
    assert len(names) == len(set(names))
