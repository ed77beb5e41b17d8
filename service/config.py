"""Settings from ``LEAD_SLA_*`` environment variables (and a ``.env`` file).

Per-source webhook secrets are open-ended (``LEAD_SLA_WEBHOOK_SECRET_<SOURCE>``), so they are read
from the environment by name rather than declared as fields.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ApiScope = Literal["read", "admin"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    scope: ApiScope


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEAD_SLA_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite+aiosqlite:///./lead-sla.db"
    policy_file: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    api_keys: str = ""  # "key1:admin,key2:read" (scope defaults to read)
    max_body_bytes: int = 1024 * 1024
    webhook_tolerance_seconds: int = 300
    db_pool_size: int = 20
    sweep_interval_seconds: float = 1.0
    sweep_batch_size: int = 1000
    sweep_concurrency: int = 2  # sweep transactions at once on PostgreSQL; SQLite runs one
    dispatch_interval_seconds: float = 1.0
    dispatch_batch_size: int = 200
    dispatch_concurrency: int = 20
    delivery_timeout_seconds: float = 10.0
    delivery_max_attempts: int = 8
    delivery_backoff_base_seconds: float = 5.0
    delivery_backoff_max_seconds: float = 3600.0
    lease_seconds: float = 60.0
    gauges_interval_seconds: float = 15.0
    volume_interval_seconds: float = 300.0
    late_after_seconds: float = 60.0  # a timer fired later than this is marked late
    raw_retention_days: int = 30
    outbox_retention_days: int = 14  # delivered notifications; pending and dead are kept
    log_level: str = "INFO"
    env_overrides: dict[str, str] = Field(default_factory=dict, exclude=True)

    def webhook_secret(self, source: str) -> str | None:
        """``LEAD_SLA_WEBHOOK_SECRET_<SOURCE>`` (tests may inject via ``env_overrides``)."""
        name = f"LEAD_SLA_WEBHOOK_SECRET_{source.upper()}"
        value = self.env_overrides.get(name) or os.environ.get(name) or _dotenv().get(name)
        return value or None

    def parsed_api_keys(self) -> list[ApiKey]:
        keys: list[ApiKey] = []
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            key, _, scope = item.partition(":")
            keys.append(ApiKey(key=key, scope="admin" if scope == "admin" else "read"))
        return keys

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def environment(self) -> Mapping[str, str]:
        """What ``env:NAME`` references in the policy file resolve against."""
        return {**_dotenv(), **os.environ, **self.env_overrides}


@functools.cache
def _dotenv() -> dict[str, str]:
    """The ``.env`` file, read once per process: webhook secrets are looked up per request."""
    return {k: v for k, v in dotenv_values(".env").items() if v is not None}
