"""Service settings, read from the environment once and validated at start-up.

One :class:`Settings` object is built by ``create_app`` (or the worker) and passed down; nothing
else reads ``os.environ``. The names are the ones ``docker-compose.yml`` and ``docs/deploy.md`` use:
``DATABASE_URL``, ``REDIS_URL`` (unset = embedded mode) and ``RLHFKIT_*``.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.core.keys import RedisKeys

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True for loopback names and addresses (``localhost``, 127.0.0.0/8, ::1, ::ffff:127.x)."""
    host = host.lower().strip("[]")
    if host in ("localhost", "ip6-localhost") or host.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


class Settings(BaseSettings):
    """Everything the backend and the worker need to know about their surroundings."""

    model_config = SettingsConfigDict(env_prefix="RLHFKIT_", extra="ignore", frozen=True)

    database_url: str = Field(default="sqlite:///./rlhfkit.db", validation_alias=AliasChoices("DATABASE_URL", "RLHFKIT_DATABASE_URL"),
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db")
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "RLHFKIT_REDIS_URL"),
        description="redis://host:port/db; unset = embedded mode (runs execute in local processes)")
    api_tokens: str = Field(default="", description="Comma-separated bearer tokens; empty = no auth (loopback only)")
    insecure: bool = Field(default=False, description="Without tokens, serve connections that arrive on a non-loopback "
                           "address too (anyone on the network can submit runs); `rlhfkit serve --insecure` sets it")
    allowed_hosts: str = Field(default="", description="Comma-separated Host header names accepted (no port; `*` = any). "
                               "Empty: loopback names (localhost, 127.0.0.1, ::1) without tokens, any with tokens")
    allowed_origins: str = Field(default="", description="Comma-separated extra browser origins (scheme://host:port) "
                                 "that may send state-changing requests and open WebSockets; the page's own origin always may")
    redis_prefix: str = Field(default="rlhfkit", description="Prefix of every Redis key this service writes")
    queue: str = Field(default="rlhfkit", description="Default Celery queue runs are routed to")
    artifacts_dir: Path = Field(default=Path("./artifacts"), description="Where run outputs (events.jsonl, profiles, checkpoints) live")
    static_dir: Path | None = Field(default=None, description="Built SPA directory (default: backend/static when present)")
    heartbeat_timeout_s: float = Field(default=30.0, gt=0, description="A running Celery run whose worker heartbeat is older than this is marked failed (worker lost)")
    stream_maxlen: int = Field(default=200_000, ge=1000, description="Approximate cap on each run's Redis Stream length")
    consumer_name: str = Field(default_factory=lambda: f"backend-{socket.gethostname()}",
                               description="This backend's name in the Redis consumer group (stable across restarts)")
    embedded_workers: int = Field(default=1, ge=1, le=64, description="Embedded mode: runs executing at the same time")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Request bodies above this get 413")
    ws_heartbeat_s: float = Field(default=15.0, gt=0, description="Idle WebSocket heartbeat interval")
    reaper_interval_s: float = Field(default=2.0, gt=0, description="How often the backend checks worker heartbeats")
    migrate: bool = Field(default=True, description="Run Alembic migrations at start-up")
    warm_estimator: bool = Field(
        default=True,
        description="Load the memory estimator's libraries (torch, transformers, the tiny tokenizer) in a background "
                    "thread at start-up, so the first estimate or suggestions request does not wait for them")

    @field_validator("database_url")
    @classmethod
    def _driver(cls, v: str) -> str:
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            return "postgresql+psycopg://" + v.split("://", 1)[1]  # psycopg 3 is the driver we ship
        return v

    @property
    def tokens(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.split(",") if t.strip()]

    @property
    def hosts(self) -> frozenset[str] | None:
        """Accepted Host names (lower case, no port), or None for any. Without tokens the default is
        loopback names only: a DNS-rebinding page then cannot reach the token-less server under its
        own name. With tokens any name is fine, since a rebinding page has no token to send."""
        names = frozenset(h.strip().lower().strip("[]") for h in self.allowed_hosts.split(",") if h.strip())
        if "*" in names or (not names and self.tokens):
            return None
        return names or LOOPBACK_NAMES

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @property
    def keys(self) -> RedisKeys:
        """The Redis keys of this deployment (:mod:`backend.core.keys`)."""
        return RedisKeys(self.redis_prefix)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
