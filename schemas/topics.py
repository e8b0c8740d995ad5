"""The topic catalogue: every topic, the Avro record it carries, its key, partitions and retention.

Every topic is keyed by `video_id` so that all events of one video stay in order on one partition.
The project creates these topics itself (broker auto-creation is off): `infra.kafka.topics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: str  # the Avro record name in schemas/avro/
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    key: str = "video_id"


def _retained(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS)}


# Latest value per video kept forever: state that services rebuild by replaying the topic.
_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(3600 * 1000)}
# Every event kept forever: the video lifecycle, which the catalog is rebuilt from (docs/catalog.md).
# A few events per video, and the decisions are the moderation audit trail.
_KEPT = {"cleanup.policy": "delete", "retention.ms": "-1"}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("lustrax.video.uploaded", "VideoUploaded", 3, _KEPT),
    # Many per video, and the catalog needs only that one was sent: the latest per video is kept.
    TopicSpec("lustrax.video.transcode-progress", "TranscodeProgress", 3, _COMPACTED),
    TopicSpec("lustrax.video.transcoded", "VideoTranscoded", 3, _KEPT),
    TopicSpec("lustrax.video.transcode-failed", "TranscodeFailed", 3, _KEPT),
    TopicSpec("lustrax.video.moderation", "ModerationDecided", 3, _KEPT),
    # The human review queue: one request per video decided NEEDS_REVIEW (docs/moderation.md).
    TopicSpec("lustrax.video.review-queue", "ModerationReviewRequested", 3, _KEPT),
    TopicSpec("lustrax.video.published", "VideoPublished", 3, _COMPACTED),
    TopicSpec("lustrax.engagement.views", "VideoView", 6, _retained(7)),
    TopicSpec("lustrax.engagement.likes", "VideoLike", 6, _retained(30)),
    TopicSpec("lustrax.engagement.watch-ticks", "WatchTick", 6, _retained(3)),
    TopicSpec("lustrax.feed.like-updates", "LikeUpdate", 3, _retained(1)),
    TopicSpec("lustrax.analytics.heat-scores", "HeatScoreUpdated", 3, _COMPACTED),
    # Trust and safety (docs/trust-and-safety.md): every notice, decision and effect kept forever,
    # the legal record the takedown processor and the API's case projection are rebuilt from.
    TopicSpec("lustrax.trust.dmca-notices", "DmcaNoticeReceived", 3, _KEPT),
    TopicSpec("lustrax.trust.counter-notices", "DmcaCounterNoticeReceived", 3, _KEPT),
    TopicSpec("lustrax.trust.court-actions", "CourtActionReported", 3, _KEPT),
    TopicSpec("lustrax.video.taken-down", "VideoTakenDown", 3, _KEPT),
    TopicSpec("lustrax.video.restored", "VideoRestored", 3, _KEPT),
    TopicSpec("lustrax.trust.notifications", "PartyNotified", 3, _KEPT),
    TopicSpec("lustrax.trust.strikes", "StrikeRecorded", 3, _KEPT),
    TopicSpec("lustrax.trust.strikes-withdrawn", "StrikeWithdrawn", 3, _KEPT),
    TopicSpec("lustrax.trust.terminations", "AccountTerminated", 3, _KEPT),
    TopicSpec("lustrax.trust.complaints", "ComplaintReceived", 3, _KEPT),
    TopicSpec("lustrax.trust.complaint-decisions", "ComplaintResolved", 3, _KEPT),
)

TOPIC_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}
TOPIC_BY_SCHEMA: dict[str, TopicSpec] = {spec.schema: spec for spec in TOPICS}

# Messages a processor could not handle, with the reason in the headers; raw bytes, no schema.
DEAD_LETTER_TOPIC = TopicSpec("lustrax.dead-letters", "", 3, _retained(30))

# Changelogs of the heat worker's Faust tables (app "lustrax-heat"): compacted, partitioned like
# the engagement topics they are co-partitioned with. Created up front so that a worker's first
# start never races the creation of its own changelogs.
HEAT_TABLES = ("heat-state",)
STATE_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(f"lustrax-heat-{table}-changelog", "", TOPIC_BY_SCHEMA["VideoView"].partitions,
              {"cleanup.policy": "compact"}, key="video_id")
    for table in HEAT_TABLES
)
