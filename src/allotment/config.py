"""Settings: every knob of the service, read from `ALLOTMENT_*` environment variables."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _duration(value: Any) -> Any:
    """`30d`, `72h`, `90m`, `3600s` (or a number of seconds) → a timedelta, at least an hour."""
    if isinstance(value, str) and not re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        from allotment.policy.durations import parse_duration

        value = parse_duration(value.strip())  # `abc` is refused with the same message
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        value = timedelta(seconds=float(value))
    if isinstance(value, timedelta) and value < timedelta(hours=1):
        raise ValueError("a retention is at least 1h")
    return value


Retention = Annotated[timedelta, BeforeValidator(_duration)]

BROKER_SCHEMES = ("nats", "tls")
# What NATS allows in a stream name: no whitespace, `.`, `*`, `>`, path separators or
# control characters, at most 255 characters (docs/configuration.md).
_STREAM_NAME = re.compile(r"[^\s.*>/\\\x00-\x1f\x7f]{1,255}")


def broker_problem(url: str) -> str | None:
    """What is wrong with an ALLOTMENT_EVENTS_BROKER value (None: nothing): a comma-separated
    list of `nats://host[:port]` or `tls://host[:port]` URLs, or bare `host:port` (read as
    nats://). Never echoes a password."""
    parts = [part.strip() for part in url.split(",") if part.strip()]
    if not parts:
        return "a nats://host:port URL (or several, comma-separated) is required"
    for part in parts:
        not_one = f"{without_credentials(part)!r} is not a NATS server's URL (nats://host:port)"
        try:
            found = urlsplit(part if "://" in part else f"nats://{part}")
            port = found.port  # a port that is not a number raises here
        except ValueError:
            return not_one
        if found.scheme not in BROKER_SCHEMES:
            return f"{found.scheme}:// is not a NATS URL: use nats://host:port or tls://host:port"
        if not found.hostname or found.path not in ("", "/") or found.query or found.fragment:
            return not_one
        if "://" not in part and port is None:  # `not-a-url`: no scheme, no port
            return not_one
    return None


def without_credentials(part: str) -> str:
    """A broker URL without its user information (a password or a token)."""
    scheme, sep, rest = part.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _cluster_urls(value: Any) -> Any:
    """Each seed node a `redis://` or `rediss://` URL with a host and a port, all of one
    scheme (the client reaches every node the same way); a password is never echoed."""
    if not isinstance(value, str):
        return value
    schemes = set()
    for seed in (url.strip() for url in value.split(",")):
        if not seed:
            continue
        part = urlsplit(seed)
        shown = seed.replace(f":{part.password}@", ":***@") if part.password else seed
        try:
            port = part.port
        except ValueError:  # not a number, or out of range
            port = None
        if part.scheme not in ("redis", "rediss") or not part.hostname or port is None:
            raise ValueError(
                f"{shown!r} is not a redis:// or rediss:// URL with a host and a port: "
                "write each seed node as redis://host:port (redis://:password@host:port "
                "with a password), comma-separated"
            )
        if part.path not in ("", "/", "/0"):
            raise ValueError(
                f"{shown!r} names a database: a Redis Cluster has only database 0, "
                "leave the path out"
            )
        schemes.add(part.scheme)
    if len(schemes) > 1:
        raise ValueError(
            "mixes redis:// and rediss://: every node of the cluster is reached the same way, "
            "with TLS (rediss://) or without"
        )
    return value


ClusterUrls = Annotated[str | None, BeforeValidator(_cluster_urls)]

# The URL schemes each store takes (docs/configuration.md, "Stores"); postgresql+psycopg://
# is SQLAlchemy's spelling of the first (db.async_url).
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _store_url(value: str | None, schemes: tuple[str, ...], expected: str) -> str | None:
    """Refuse a URL of another kind at configuration time, in a sentence naming only its
    scheme (never the rest: it may hold a password); unset or empty stays unset."""
    if not value or value.startswith(schemes):
        return value
    scheme, sep, _ = value.partition("://")
    found = f"a URL starting '{scheme}://'" if sep else "not a URL"
    raise ValueError(f"{expected}; the value given is {found}")


class Settings(BaseSettings):
    # Errors never repeat the value given: a store's URL may hold a password.
    model_config = SettingsConfigDict(
        env_prefix="ALLOTMENT_", env_file=None, extra="ignore", hide_input_in_errors=True
    )

    # None means "start the embedded server under data_dir" (see embedded.py).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".allotment")
    database_name: str = "allotment"

    # A streaming replica of the database for reads that may go there (snapshot loads, usage
    # reads, invoice previews); unset, every read is the primary's (docs/scale-out.md).
    database_replica_url: str | None = None
    # The replica serves only while it is known to hold every commit older than this.
    replica_max_lag_s: float = Field(default=5.0, gt=0)
    replica_check_s: float = Field(default=1.0, ge=0.1)  # how often its lag is measured

    # Prefix of every Redis key and channel, so several deployments (or test runs) can share
    # one Redis without seeing each other.
    redis_namespace: str = "allotment"
    # Seed nodes of a Redis Cluster (`redis://host:port`, or `rediss://` for TLS; comma-separated,
    # checked by _cluster_urls): set, the service keeps everything it keeps in Redis there and
    # ALLOTMENT_REDIS_URL is not used (docs/scale-out.md, "Redis Cluster").
    redis_cluster_urls: ClusterUrls = None

    host: str = "127.0.0.1"
    port: int = 8000

    log_level: str = "INFO"
    log_json: bool = True

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_attributes_bytes: int = Field(default=16_384, ge=256)

    # A fixed pool: under load, requests queue here for a connection (cheap) instead of
    # opening and closing overflow connections per request (a PostgreSQL backend each: the
    # seat benchmark lost a third of its throughput to that churn).
    db_pool_size: int = 16
    db_max_overflow: int = 0
    # Autocommit connections for one-statement hot paths (db.create_hot_pool), made on demand.
    db_hot_pool_size: int = 8
    db_hot_wait_s: float = 0.25  # then the request takes the general path (its own pool)
    db_statement_timeout_ms: int = 10_000

    # Principals (API keys) are cached in process; revocation is broadcast after commit.
    # While Redis (the bus) is down, auth_cache_ttl_s bounds how long a worker that missed
    # a revocation keeps honouring the key.
    auth_cache_ttl_s: float = 5.0
    auth_cache_ttl_bus_up_s: float = 300.0  # revocations arrive through the bus meanwhile

    idempotency_ttl_s: int = 24 * 3600

    # The decision path (docs/design.md, "Architecture"): snapshot cache lifetimes, degraded
    # modes.
    snapshot_cache_entries: int = 100_000
    snapshot_ttl_s: float = 300.0  # while the invalidation bus is connected
    snapshot_ttl_bus_down_s: float = 5.0  # while Redis is unreachable
    snapshot_stale_max_s: float = 300.0  # PostgreSQL down: serve cached, flagged stale
    decision_sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)  # allows logged

    # Usage events: how late (and how far ahead, for clock skew) an event's `time` may be.
    events_late_window_s: int = Field(default=7 * 24 * 3600, ge=60)
    events_future_s: int = Field(default=300, ge=0)
    # NATS JetStream between ingestion and aggregation (docs/scale-out.md, "NATS JetStream"):
    # `nats://host:port[,nats://host:port…]` (or tls://; checked at start, broker_problem).
    # Set, POST /v1/events validates, publishes each
    # event to the stream and answers once JetStream acknowledged it; `allotment aggregator`
    # writes them into PostgreSQL. Unset (the default): events go straight to PostgreSQL.
    events_broker: str | None = None
    events_stream: str = "ALLOTMENT-EVENTS"  # the stream (created when missing)
    events_stream_replicas: int = Field(default=1, ge=1, le=5)  # 3 on a 3-node cluster
    # How long JetStream drops a re-sent (source, id) itself (the database dedupes past it).
    events_dedupe_window_s: float = Field(default=120.0, gt=0)
    events_publish_timeout_s: float = Field(default=5.0, gt=0)  # past it: a 503
    # Aggregators: messages per fetch (what the stream holds, at once), how long a fetch
    # waits when it holds none, and how long a fetched batch stays unacknowledged before
    # JetStream hands it to another aggregator.
    aggregator_batch: int = Field(default=1000, ge=1, le=10_000)
    aggregator_wait_s: float = Field(default=0.2, gt=0)
    aggregator_ack_wait_s: float = Field(default=30.0, ge=1)
    # How often an API worker reads the consumer's lag for /metrics.
    events_lag_check_s: float = Field(default=5.0, gt=0)
    # Meter use for plain checks is reread at most this often per customer and worker (the
    # worker that took the events or the consume sees them at once).
    usage_refresh_s: float = Field(default=0.25, ge=0.0)
    # ... for every customer checked in the last `usage_active_s`: a check of a customer quiet
    # for longer waits on one read of PostgreSQL (docs/usage.md, "How fresh").
    usage_active_s: float = Field(default=60.0, gt=0.0)
    # Fractions of a limit at which decisions carry an `approaching_limit` warning.
    usage_warning_thresholds: tuple[float, ...] = (0.8, 1.0)

    # Browser origins allowed to call the OFREP routes (CORS; a JSON list, `["*"]` for any):
    # none by default (docs/openfeature.md, "In the browser").
    ofrep_cors_origins: tuple[str, ...] = ()

    # The change stream, GET /v1/stream (docs/stream.md).
    stream_heartbeat_s: float = Field(default=15.0, gt=0)  # a comment when nothing else went
    stream_retry_ms: int = Field(default=1000, ge=0)  # the `retry:` hint: reconnect after
    # Streams end after about this long (the client reconnects with Last-Event-ID and misses
    # nothing), so long-lived connections spread over the workers again after a deploy.
    stream_max_s: float = Field(default=3600.0, gt=0)
    # Entries the Redis journal keeps for resuming (approximate trimming); an older
    # Last-Event-ID gets `resync`.
    stream_journal_max: int = Field(default=10_000, ge=100)
    # Events waiting for one slow client; past this its backlog is dropped for a `resync`.
    stream_client_queue: int = Field(default=1000, ge=1)
    # Signed artifacts (docs/artifacts.md). The signing keys' private halves are encrypted
    # under a key derived from this secret; unset, one is generated into
    # `<data_dir>/signing-secret` on first use.
    signing_secret: SecretStr | None = None
    # Subjects' pseudonyms (docs/privacy.md): HMAC-SHA256 under a key derived from this
    # secret; unset, from the signing secret (above). Changing it changes every pseudonym.
    pseudonym_secret: SecretStr | None = None
    # How long the decision log and raw usage events are kept; the worker purges older rows
    # (usage counters, and so invoices, are kept). A duration such as `30d` or `72h`.
    decisions_retention: Retention = timedelta(days=30)
    events_retention: Retention = timedelta(days=400)
    artifact_issuer: str = "allotment"  # the artifacts' `iss`
    # Seconds an artifact still grants access after its `exp` (its `grace_until`), with the
    # warning `grace_period`, where the customer's plan sets no `grace` (docs/artifacts.md).
    artifact_grace_s: int = Field(default=0, ge=0, le=30 * 24 * 3600)
    # The customer portal (docs/portal.md): how long a one-time link may wait to be opened,
    # and how long the browser session it opens lasts.
    portal_link_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    portal_session_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    # Sign-off: a publish needs an approval from a second admin key (docs/release-notes.md).
    policy_require_approval: bool = False

    # Webhooks (docs/webhooks.md). Private, loopback and link-local targets are refused unless
    # this is set (development and tests); checked at creation and again at every delivery.
    webhooks_allow_private: bool = False
    webhooks_timeout_s: float = Field(default=15.0, gt=0, le=300)  # one whole attempt
    # A claimed delivery is held this long; past it another worker may send it again (the
    # sender was killed). Kept at 1.5 × the timeout at least, so two workers never send it at once.
    webhooks_lease_s: float = Field(default=60.0, gt=0)
    # Retries: a random delay in [0, min(cap, base * 2^(attempt-1))] ("full jitter"), until
    # `webhooks_retry_window_s` after the message (or its last manual retry).
    webhooks_backoff_base_s: float = Field(default=5.0, gt=0)
    webhooks_backoff_cap_s: float = Field(default=7200.0, gt=0)
    webhooks_retry_window_s: float = Field(default=86400.0, gt=0)
    # A 429/502/504 without Retry-After holds the endpoint back this long (Retry-After is
    # honoured up to an hour).
    webhooks_slow_s: float = Field(default=60.0, ge=0)
    webhooks_rotation_overlap_s: int = Field(default=86400, ge=0)  # both secrets sign
    webhooks_concurrency: int = Field(default=16, ge=1)  # deliveries in flight per worker
    # The delivery loop wakes on PostgreSQL NOTIFY at commit, and polls this often besides.
    webhooks_poll_s: float = Field(default=1.0, gt=0)
    # Delivered or failed messages are deleted (with their attempts) after this long: a
    # duration such as `30d`, as the retentions above.
    webhooks_retention: Retention = timedelta(days=30)

    @property
    def redis_cluster_seeds(self) -> list[str]:
        return [url.strip() for url in (self.redis_cluster_urls or "").split(",") if url.strip()]

    @field_validator("events_broker")
    @classmethod
    def _a_nats_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        problem = broker_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("events_stream")
    @classmethod
    def _a_stream_name(cls, value: str) -> str:
        if not _STREAM_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a NATS stream name: 1 to 255 characters, none of them "
                "whitespace, '.', '*', '>', '/' or '\\'"
            )
        return value

    @field_validator("database_url", "database_replica_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        return _store_url(
            value,
            POSTGRES_SCHEMES,
            "must be a PostgreSQL URL, postgresql://user:password@host:5432/database "
            "(or postgres://…)",
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _store_url(
            value,
            REDIS_SCHEMES,
            "must be a Redis URL, redis://host:6379/0 (rediss:// for TLS, unix:///path/to/socket)",
        )

    @model_validator(mode="after")
    def _replica_measured_within_its_bound(self) -> Settings:
        if self.replica_check_s >= self.replica_max_lag_s:
            raise ValueError(
                "ALLOTMENT_REPLICA_CHECK_S must be shorter than ALLOTMENT_REPLICA_MAX_LAG_S: "
                "the replica serves only while its last measurement is within the bound"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
