"""The one settings module: every host, port, bucket and secret comes from here.

All values are read from environment variables prefixed ``LUSTRAX_`` (``LUSTRAX_KAFKA_BOOTSTRAP``
for ``kafka_bootstrap`` and so on); the defaults describe the local stack on loopback. Secrets
that are not given are generated once under ``LUSTRAX_HOME/secrets`` for local use; with
``LUSTRAX_ENV=production`` a missing secret is an error instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.age_policy import AgePolicy, parse_jurisdictions
from common.errors import ConfigError
from common.tokens import DEFAULT_MAX_TTL_S, AgeVerifier, age_token_key

ENV_PREFIX = "LUSTRAX_"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The key pair id of the locally generated CloudFront key (production names its key group's key).
LOCAL_KEY_PAIR_ID = "LOCALEDGEKEY"


def _checkout_root() -> Path:
    """The source checkout when running from one (where `.lustrax/` goes), else the cwd."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """'host:port' (or a URL) -> (host, port); IPv6 in brackets is accepted."""
    parsed = urlsplit(address if "//" in address else f"//{address}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def _origin_list(text: str) -> list[str]:
    return [origin.strip() for origin in text.split(",") if origin.strip()]


def _new_rsa_key_pem() -> str:
    """A new RSA 2048 key (what CloudFront key groups take) as PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode().strip()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    env: Literal["local", "production"] = "local"
    home: Path = Field(default_factory=lambda: _checkout_root() / ".lustrax")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "lustrax")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"

    # S3
    s3_endpoint: str = "http://127.0.0.1:7070"
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_uploads_bucket: str = "lustrax-uploads"
    s3_public_bucket: str = "lustrax-public"
    s3_staging_bucket: str = "lustrax-staging"
    versitygw_version: str = "v1.8.0"

    # ClickHouse: embedded chDB on a data directory unless a server URL is given.
    clickhouse_dsn: str | None = None
    clickhouse_database: str = "lustrax"

    # Delivery: published URLs are {cdn_base}/videos/{id}/...; by default the local edge (infra/edge).
    cdn_base: str | None = None
    edge_host: str = "127.0.0.1"
    edge_port: int = 7080
    # CloudFront signed cookies for premium videos (docs/playback.md): the key group's public key id
    # and a PEM file with its RSA private key; locally a key is generated under LUSTRAX_HOME/secrets.
    cloudfront_key_pair_id: str | None = None
    cloudfront_private_key_file: Path | None = None
    # The distribution in front of the public bucket: a takedown invalidates the video's paths on it
    # (infra/edge/invalidation.py). None: the local edge, which caches nothing.
    cloudfront_distribution_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,64}$")
    playback_ttl_s: int = Field(default=4 * 3600, gt=0, le=7 * 24 * 3600)
    # Bind the cookies to the caller's IP (/32): breaks players that change networks mid-session.
    playback_bind_client_ip: bool = False
    # Set-Cookie Domain, e.g. `.example.com` when the API and the CDN are sibling hosts.
    playback_cookie_domain: str | None = None
    jwt_secret: str | None = None
    # Longest token lifetime (exp - iat) the APIs accept, and that `lustrax token --ttl` issues.
    jwt_max_ttl_s: int = Field(default=DEFAULT_MAX_TTL_S, gt=0)

    # Services (later issues add theirs here)
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8080
    ingest_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    ingest_delivery_timeout_ms: int = Field(default=5000, ge=1000)
    ingest_like_burst: int = Field(default=30, gt=0)
    ingest_like_rate_per_min: float = Field(default=60.0, gt=0)
    upload_max_bytes: int = Field(default=4 * 1024**3, gt=0)
    upload_url_ttl_s: int = Field(default=900, gt=0, le=7 * 24 * 3600)
    # Transcoding (processors/transcode)
    transcode_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    transcode_segment_seconds: int = Field(default=4, ge=4, le=6)
    transcode_max_source_bytes: int = Field(default=4 * 1024**3, gt=0)
    transcode_max_duration_s: float = Field(default=3 * 3600, gt=0)
    transcode_timeout_s: float = Field(default=4 * 3600, gt=0)
    transcode_max_attempts: int = Field(default=4, ge=1)
    transcode_retry_base_s: float = Field(default=2.0, gt=0)
    transcode_workdir: Path | None = None
    transcode_web_port: int = 6071

    # ClickHouse sink and heat scores (processors/sink, processors/heat_score)
    sink_batch_rows: int = Field(default=10_000, gt=0)
    sink_batch_interval_s: float = Field(default=1.0, gt=0)
    sink_query_port: int = 6072
    heat_half_life_s: float = Field(default=6 * 3600, gt=0)
    heat_emit_interval_s: float = Field(default=10.0, gt=0)
    # How often a video's changed state is written to its table (RocksDB + changelog); events are
    # committed only once written, so a crash replays at most this much (harmlessly: dedup).
    heat_checkpoint_interval_s: float = Field(default=10.0, gt=0, le=60)
    heat_web_port: int = 6073
    # Heat workers in one consumer group (`lustrax up` starts them); the first on heat_web_port,
    # worker n on heat_web_port + 100 * (n - 1); at most one per engagement partition.
    heat_workers: int = Field(default=1, ge=1, le=6)
    like_update_min_interval_s: float = Field(default=5.0, ge=0)
    like_update_min_change: float = Field(default=0.1, gt=0)

    # Moderation (processors/moderation, docs/moderation.md)
    moderation_backend: Literal["local", "rekognition"] = "local"
    moderation_policy: Path | None = None  # a policy file; None: the bundled policy/default.yaml
    moderation_sample_interval_s: float = Field(default=2.0, ge=0.5, le=60)
    moderation_min_confidence: float = Field(default=40.0, ge=0, le=100)  # Rekognition's MinConfidence
    moderation_minor_age: int = Field(default=18, ge=1, le=30)  # a face whose AgeRange.Low is below: review
    moderation_aws_region: str = "us-east-1"
    moderation_max_attempts: int = Field(default=5, ge=1)
    moderation_retry_base_s: float = Field(default=1.0, gt=0)
    moderation_web_port: int = 6074

    # WebSocket gateway (gateways/ws, docs/ws-protocol.md)
    ws_host: str = "127.0.0.1"
    ws_port: int = 8765
    ws_processes: int = Field(default=1, ge=1, le=64)  # SO_REUSEPORT processes sharing ws_port
    ws_history_size: int = Field(default=1000, ge=1)  # frames kept per channel for recovery
    ws_history_age_s: float = Field(default=600.0, gt=0)
    ws_max_channels: int = Field(default=128, ge=1)  # per connection
    ws_max_message_bytes: int = Field(default=64 * 1024, ge=1024)  # client -> server
    ws_max_connections_per_ip: int = Field(default=1000, ge=1)  # per gateway process
    ws_client_buffer_bytes: int = Field(default=1024 * 1024, ge=4096)  # still past it after the grace: 3008 "slow"
    ws_slow_grace_s: float = Field(default=1.0, gt=0, le=60)
    ws_anonymous_feed: bool = True
    # Browser origins allowed to connect (comma-separated); clients that send no Origin are not browsers.
    # None: the page's origins (page_origins).
    ws_allowed_origins: str | None = None
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_presence_interval_s: float = Field(default=2.0, gt=0)

    # Socket.IO endpoint of the gateway (gateways/socketio, docs/ws-protocol.md "Socket.IO"): on ws_host,
    # served by the first gateway process; 0 turns it off. The ws_* limits, origins and auth apply.
    socketio_port: int = Field(default=8766, ge=0, le=65535)
    socketio_client_queue_frames: int = Field(default=2000, ge=16)  # unsent frames past it: disconnected "slow"
    # The page at GET / and the demo (producers/routers/page.py, lustrax/demo.py, docs/page.md)
    # The gateway URL as browsers reach it (behind a load balancer: wss://...); None: ws://WS_HOST:WS_PORT/v1/ws.
    page_gateway_url: str | None = None
    # Origins the edge answers CORS for (comma-separated), so the page's player may fetch playlists
    # and segments; None: the page's origins.
    edge_allowed_origins: str | None = None
    trending_cache_s: float = Field(default=5.0, ge=0, le=300)  # GET /v1/trending answers are reused this long

    # Age gate (common/age_policy.py, producers/routers/age_gate.py, docs/trust-and-safety.md)
    age_token_secret: str | None = None  # None: the age tokens' key is derived from the JWT secret
    age_token_ttl_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)  # also the cookie's Max-Age
    # Comma-separated ISO 3166-1 alpha-2 codes where only a highly effective method passes (e.g. "GB").
    age_gate_strict_jurisdictions: str = ""
    age_gate_default_jurisdiction: str = Field(default="ZZ", pattern=r"^[A-Z]{2}$")  # ZZ: unknown
    # The header a trusted edge sets to the viewer's country (CloudFront-Viewer-Country); None: never read.
    age_gate_jurisdiction_header: str | None = None
    age_gate_min_age: int = Field(default=18, ge=18, le=25)
    age_gate_rate_per_min: float = Field(default=30.0, gt=0)  # provider sessions and exchanges, per client IP
    age_gate_burst: int = Field(default=20, gt=0)
    # Where Yoti sends the user back and its webhook (the API's public https base); None: ingest_url.
    age_gate_public_url: str | None = None
    # Yoti Age Verification (producers/age_providers/yoti.py): off until the SDK id and API key are given.
    yoti_api_url: str = "https://age.yoti.com/api/v1"
    yoti_user_view_url: str = "https://age.yoti.com"
    yoti_sdk_id: str | None = None
    yoti_api_key: str | None = None
    # Yoti's webhook signing key (PEM); None: the public key Yoti publishes, bundled in the package.
    yoti_public_key_file: Path | None = None
    yoti_age_estimation_threshold: int = Field(default=25, ge=18, le=30)  # Yoti advises a buffer over 18
    age_gate_session_ttl_s: int = Field(default=900, ge=60, le=30 * 24 * 3600)
    yoti_timeout_s: float = Field(default=10.0, gt=0)

    # Recommendations: reels (processors/recs, producers/routers/reels.py, docs/recommendations.md).
    # Milvus: a server by URI in production; None: Milvus Lite embedded in the recs worker (data under
    # LUSTRAX_HOME/data/milvus), served to the API on loopback recs_milvus_port.
    milvus_uri: str | None = None
    milvus_token: str | None = None  # a Milvus server's "user:password" or API key
    recs_milvus_port: int = 6076
    recs_web_port: int = 6075  # the recs worker's health and `lustrax recs train` endpoint
    recs_dim: int = Field(default=32, ge=2, le=256)  # embedding dimensions
    recs_train_interval_s: float = Field(default=3600.0, ge=10)
    recs_training_days: int = Field(default=30, ge=1, le=90)  # watch history read for training (ticks: 90 days)
    recs_history_size: int = Field(default=500, ge=1, le=2000)  # videos remembered per user (finished ones excluded)
    recs_recent_size: int = Field(default=50, ge=1, le=500)  # latest videos averaged into the user's embedding
    recs_candidates: int = Field(default=100, ge=1, le=1000)  # nearest videos kept per user (Milvus search)
    recs_hot_candidates: int = Field(default=200, ge=0, le=1000)  # hottest videos added to every user's candidates
    recs_fresh_candidates: int = Field(default=50, ge=0, le=1000)  # newest published videos added likewise
    recs_weight_heat: float = Field(default=0.3, ge=0)
    recs_weight_match: float = Field(default=1.0, ge=0)
    recs_weight_explore: float = Field(default=0.1, ge=0)
    recs_heat_window: Literal["1h", "24h"] = "24h"
    recs_cache_s: float = Field(default=10.0, ge=0, le=300)  # the hot and fresh candidates are reused this long
    # Trust and safety: DMCA notices, takedowns, counter-notices, repeat infringers, complaints
    # (processors/takedown, producers/routers/dmca.py, docs/trust-and-safety.md).
    # Business days after a counter-notice before the video is restored (17 U.S.C. 512(g)(2)(C): 10 to 14).
    dmca_restore_business_days: int = Field(default=10, ge=10, le=14)
    # Dates (YYYY-MM-DD, comma-separated) that are not business days, beside Saturdays and Sundays.
    trust_holidays: str = ""
    repeat_infringer_strikes: int = Field(default=3, ge=1)  # active strikes that terminate an account
    complaint_business_days: int = Field(default=7, ge=1, le=30)  # a complaint's resolution deadline
    # Complaint reasons that hide the video at once until an admin decides (comma-separated).
    complaint_hide_reasons: str = "depicted_without_consent,underage,non_consensual"
    # Notices and complaints per client IP (anyone may send them): a burst, then this many a minute.
    trust_report_burst: int = Field(default=10, ge=1)
    trust_report_rate_per_min: float = Field(default=2.0, gt=0)
    # The trust-and-safety clock (deadlines, restores, overdue complaints) runs this far ahead of the
    # wall clock: a demo or a test plays a 10-business-day timeline in seconds. 0 in production.
    trust_clock_offset_s: float = Field(default=0.0, ge=0)
    takedown_tick_s: float = Field(default=5.0, gt=0, le=3600)  # how often the processor checks deadlines
    takedown_web_port: int = 6077

    startup_timeout_s: float = Field(default=90.0, gt=0)
    # The supervisor (lustrax/restart_policy.py): a component that exits is restarted with backoff;
    # more than restart_max_failures exits within restart_window_s and it is given up.
    restart_max_failures: int = Field(default=5, ge=0)
    restart_window_s: float = Field(default=120.0, gt=0)
    restart_backoff_max_s: float = Field(default=15.0, gt=0)
    # How long a service may take to stop on SIGTERM before it is killed (`lustrax down`).
    stop_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("age_gate_strict_jurisdictions")
    @classmethod
    def _jurisdiction_codes(cls, value: str) -> str:
        parse_jurisdictions(value)  # a ValueError names the bad entry
        return value

    @field_validator("trust_holidays")
    @classmethod
    def _holidays_are_dates(cls, value: str) -> str:
        for day in filter(None, (part.strip() for part in value.split(","))):
            date.fromisoformat(day)  # a ValueError names the bad date
        return value

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> "Settings":
        if self.env == "production":
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("s3_access_key", "s3_secret_key", "jwt_secret", "clickhouse_dsn", "cdn_base",
                             "cloudfront_key_pair_id", "cloudfront_private_key_file")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)}")
        return self

    # -- derived locations -------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def trust_holiday_dates(self) -> frozenset[date]:
        return frozenset(date.fromisoformat(day.strip()) for day in self.trust_holidays.split(",") if day.strip())

    @property
    def complaint_hide_reason_set(self) -> frozenset[str]:
        return frozenset(reason.strip().lower() for reason in self.complaint_hide_reasons.split(",") if reason.strip())

    @property
    def page_origins(self) -> list[str]:
        """Where browsers load the page from: the ingest API's own address (and localhost for loopback)."""
        hosts = [self.ingest_host] + (["localhost"] if self.ingest_host == "127.0.0.1" else [])
        return [f"http://{host}:{self.ingest_port}" for host in hosts]

    @property
    def ws_origins(self) -> list[str]:
        return _origin_list(self.ws_allowed_origins) if self.ws_allowed_origins is not None else self.page_origins

    @property
    def edge_origins(self) -> list[str]:
        return _origin_list(self.edge_allowed_origins) if self.edge_allowed_origins is not None else self.page_origins

    @property
    def gateway_url(self) -> str:
        """The WebSocket gateway's URL as a browser or the demo reaches it."""
        return self.page_gateway_url or f"ws://{self.ws_host}:{self.ws_port}/v1/ws"

    @property
    def ingest_url(self) -> str:
        return f"http://{self.ingest_host}:{self.ingest_port}"

    @property
    def kafka_address(self) -> tuple[str, int]:
        return split_host_port(self.kafka_bootstrap.split(",")[0], 9092)

    @property
    def s3_address(self) -> tuple[str, int]:
        return split_host_port(self.s3_endpoint, 7070)

    @property
    def clickhouse_url(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def clickhouse_embedded(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    @property
    def public_base_url(self) -> str:
        """The CDN base of published URLs: LUSTRAX_CDN_BASE, else the local edge."""
        return (self.cdn_base or f"http://{self.edge_host}:{self.edge_port}").rstrip("/")

    @property
    def public_origin_url(self) -> str:
        """The public bucket itself (the CDN's origin): anonymous reads of free objects only."""
        return f"{self.s3_endpoint.rstrip('/')}/{self.s3_public_bucket}"

    @property
    def cloudfront_key_id(self) -> str:
        return self.cloudfront_key_pair_id or LOCAL_KEY_PAIR_ID

    # -- secrets: given, or generated once for the local stack ---------------------------------
    @cached_property
    def s3_credentials(self) -> tuple[str, str]:
        return (
            self.s3_access_key or self._local_secret("s3_access_key", lambda: "lx" + secrets.token_hex(8)),
            self.s3_secret_key or self._local_secret("s3_secret_key", lambda: secrets.token_urlsafe(30)),
        )

    @cached_property
    def jwt_signing_secret(self) -> str:
        return self.jwt_secret or self._local_secret("jwt_secret", lambda: secrets.token_urlsafe(48))

    @cached_property
    def age_token_key(self) -> str:
        """The age tokens' HS256 key, derived (common/tokens.py): never the JWT secret itself."""
        return age_token_key(self.age_token_secret or self.jwt_signing_secret)

    @cached_property
    def age_policy(self) -> AgePolicy:
        return AgePolicy(parse_jurisdictions(self.age_gate_strict_jurisdictions), self.age_gate_default_jurisdiction,
                         self.age_gate_jurisdiction_header)

    @property
    def age_verifier(self) -> AgeVerifier:
        return AgeVerifier(self.age_token_key, self.age_policy, self.age_token_ttl_s)

    @property
    def age_gate_base_url(self) -> str:
        return (self.age_gate_public_url or self.ingest_url).rstrip("/")

    @cached_property
    def cloudfront_private_key_pem(self) -> str:
        if self.cloudfront_private_key_file is not None:
            try:
                return self.cloudfront_private_key_file.read_text()
            except OSError as exc:
                raise ConfigError(f"{ENV_PREFIX}CLOUDFRONT_PRIVATE_KEY_FILE: cannot read it: {exc}") from None
        return self._local_secret("cloudfront_private_key.pem", _new_rsa_key_pem)

    def _local_secret(self, name: str, make: Callable[[], str]) -> str:
        path = self.home / "secrets" / name
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = make()
        # O_EXCL: when two processes race, one writes and both read the same value.
        try:
            fd = open(path, "x", opener=lambda p, flags: os.open(p, flags, 0o600))
        except FileExistsError:
            return path.read_text().strip()
        with fd:
            fd.write(value)
        return value


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value is a ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(err['loc'][0]).upper() if err['loc'] else ''}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
