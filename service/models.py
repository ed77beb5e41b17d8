"""Tables. The event log is the truth; leads and cycles are derived from it and can be rebuilt.

Instants are stored as UTC. Constraint names follow a naming convention so migrations are stable
on both PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, so ids are BIGINT on PostgreSQL only.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, UTC in the database (naive on SQLite, timestamptz on PostgreSQL)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))  # the CRM the lead lives in
    external_id: Mapped[str] = mapped_column(String(255))  # the CRM's id
    status: Mapped[str | None] = mapped_column(String(64), index=True)
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    team: Mapped[str | None] = mapped_column(String(255), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    lead_source: Mapped[str | None] = mapped_column(String(255))  # marketing source
    segment: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    country: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime | None]  # first event's occurred_at
    updated_at: Mapped[datetime | None]  # last event's occurred_at
    last_event_at: Mapped[datetime | None]  # occurred_at of the newest event in the log


class RawRequest(Base):
    """An accepted delivery exactly as received, kept for audit and replay."""

    __tablename__ = "raw_requests"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(index=True)
    headers: Mapped[dict[str, Any]]
    body: Mapped[bytes] = mapped_column(LargeBinary)


class LeadEventRow(Base):
    """The append-only event log; unique on (source, event_id) so redeliveries apply once."""

    __tablename__ = "lead_events"
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        Index("ix_lead_events_lead_id_occurred_at", "lead_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]  # the canonical event
    # The request that delivered the event, until the purge removes it
    # (``LEAD_SLA_RAW_RETENTION_DAYS``). Not a foreign key: with one, every purge would rewrite
    # the events of the requests it removes (``SET NULL``), and every event stored would cost
    # a lookup of its request and an index entry, for a column nothing looks events up by.
    raw_request_id: Mapped[int | None] = mapped_column(Id)


class Cycle(Base):
    """One SLA clock of one lead under one policy. Open cycles carry ``next_fire_at``: the timer
    row the sweep claims, under a partial index of open cycles only."""

    __tablename__ = "sla_cycles"
    __table_args__ = (
        UniqueConstraint("lead_id", "policy_id", "number"),
        Index(
            "ix_sla_cycles_next_fire_at",
            "next_fire_at",
            postgresql_where=text("next_fire_at IS NOT NULL"),
            sqlite_where=text("next_fire_at IS NOT NULL"),
        ),
        # The work queue walks it in order (``api.slas``); reports select a period by deadline.
        Index("ix_sla_cycles_due_at_id", "due_at", "id"),
        # Ids are part of outbox keys: SQLite must never hand a removed cycle's id to a new one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    policy_id: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    policy_version: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # running | paused | met | breached
    open: Mapped[bool] = mapped_column(Boolean)  # not yet stopped
    owner: Mapped[str | None] = mapped_column(String(255))  # unindexed: a queue walks due_at
    team: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime]
    due_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    breached_at: Mapped[datetime | None]
    target_seconds: Mapped[int | None] = mapped_column(Integer)
    elapsed_business_seconds: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int | None] = mapped_column(Integer)
    schedule: Mapped[list[Any]]  # [{"step", "kind", "at"}] timers of this cycle
    fired: Mapped[list[Any]]  # steps already written to the outbox
    next_fire_at: Mapped[datetime | None]
    details: Mapped[dict[str, Any]]  # pauses, start/stop events
    at_risk: Mapped[bool] = mapped_column(Boolean, default=False)  # a reminder has fired
    announced_outcome: Mapped[str | None] = mapped_column(String(16))  # "breached" once notified
    updated_at: Mapped[datetime]


class OutboxMessage(Base):
    """A notification to deliver after commit, at least once; ``key`` is its idempotency key."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    cycle_id: Mapped[int | None] = mapped_column(Id)  # nothing looks messages up by cycle
    type: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    channel_type: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # pending | delivering | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class StatusEntryRow(Base):
    """Each time a lead entered a status, with its owner and team then: what volume policies
    count. Derived from the log like cycles, and rewritten when a late event changes history."""

    __tablename__ = "status_entries"
    __table_args__ = (
        UniqueConstraint("lead_id", "event_id"),
        Index("ix_status_entries_status_entered_at", "status", "entered_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime]
    owner: Mapped[str | None] = mapped_column(String(255))
    team: Mapped[str | None] = mapped_column(String(255))
