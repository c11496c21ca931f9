"""The call history: every call kept in SQL for as long as the business needs it.

Redis holds what the next call needs, for the memory's retention; the history keeps each call
(its times, trust, how it ended, its analysis, its redacted transcript and its report) in a
database a person can query: SQLite in the data folder by default, Postgres at scale
(``RAPPORT_HISTORY_URL``). The analysis worker writes it (see
:mod:`memory.analysis.worker`): a call when it closes, again when it is analysed or
dead-lettered; writes are idempotent by call id and never turn an analysed call back.

Forgetting a caller (:meth:`CallHistory.forget`) deletes their rows and leaves a tombstone in
the same transaction, so a write of a call begun before the forget is refused. SQLite runs with
``PRAGMA secure_delete=ON``: erased text is overwritten in the file, not only unlinked.

Every failure to reach the database is a :class:`~memory.errors.HistoryUnavailableError` (retry
later); a statement it refuses (a constraint, a value out of range) is a
:class:`~memory.errors.HistoryRefusedError` (retrying will not help). The schema is migrated
(Alembic, ``migrations/`` beside this module) on first use, so a database that is down at
start-up is picked up once it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, and_, delete, event, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from memory.errors import ConfigurationError, HistoryRefusedError, HistoryUnavailableError
from memory.history.tables import analyses, calls, forgotten, turns
from memory.metrics import HISTORY_UP
from memory.models import CallAnalysis, CallRecord, CallStatus, CallTransfer, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.report import CallReport

#: The Alembic scripts, shipped inside the package (see ``package-data`` in pyproject.toml).
MIGRATIONS = Path(__file__).with_name("migrations")
#: File name of the default SQLite history, in the data folder.
SQLITE_FILENAME = "history.sqlite3"
#: ``RAPPORT_HISTORY_URL`` value that turns the history off.
OFF = "none"
#: Longest wait to connect to the database or for a statement's answer.
TIMEOUT_S = 5.0
#: Calls read per query when exporting.
EXPORT_BATCH = 500

_DAY_S = 86_400
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_ALIASES = {"postgres": "postgresql"}


@dataclass(frozen=True, slots=True)
class HistoryCall:
    """One call from the history: whose it is (key and masked number) and its record."""

    caller: CallerIdentity
    record: CallRecord


def history_database_url(url: str | None, *, data_dir: Path) -> str | None:
    """The async driver URL for ``RAPPORT_HISTORY_URL``, or None when the history is off.

    Unset or empty: SQLite in the data folder. ``sqlite:///path`` and ``postgresql://…``
    (or ``postgres://``) are given their async drivers (aiosqlite, asyncpg); a URL naming a
    driver already is kept.

    Raises:
        ConfigurationError: Not a SQLite or Postgres URL.
    """
    text = (url or "").strip()
    if text.lower() == OFF:
        return None
    if not text:
        return f"sqlite+aiosqlite:///{(data_dir / SQLITE_FILENAME).resolve()}"
    try:
        parsed = make_url(text)
    except ArgumentError as e:
        raise ConfigurationError(
            "RAPPORT_HISTORY_URL is not a database URL (sqlite:///path or postgresql://…)"
        ) from e
    backend, _, driver = parsed.drivername.partition("+")
    backend = _ALIASES.get(backend, backend)
    if backend not in _DRIVERS:
        raise ConfigurationError(
            f"RAPPORT_HISTORY_URL must be sqlite:///… or postgresql://… (or {OFF}), "
            f"not {backend}://"
        )
    if not driver or backend == "sqlite":
        return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def upgrade_schema(connection: Connection) -> None:
    """Run the history's migrations up to the newest on ``connection`` (inside its transaction).

    Works from an installed package: the scripts are found next to this module.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_connection_setup(engine: AsyncEngine) -> None:
    """Erased text overwritten in the file, cascading deletes, and explicit transactions."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let "begin" below open each transaction itself: BEGIN IMMEDIATE takes the write
        # lock at once, so two processes writing one caller never interleave a read and a write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        busy_ms = int(TIMEOUT_S * 1000)
        for pragma in ("secure_delete=ON", "foreign_keys=ON", f"busy_timeout={busy_ms}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class CallHistory:
    """The call history on one database (see the module docstring).

    Args:
        url: An async SQLAlchemy URL (see :func:`history_database_url`).
        retention_days: Calls older than this are deleted by :meth:`expire` (0: kept).
        tombstone_seconds: How long a forget's tombstone refuses late writes (the memory's
            tombstone window: no call's write arrives later than that).
    """

    def __init__(self, url: str, *, retention_days: int = 0, tombstone_seconds: int) -> None:
        self._url = make_url(url)
        connect_args: dict[str, Any] = {"timeout": TIMEOUT_S}
        if self._url.get_backend_name() == "postgresql":
            connect_args["command_timeout"] = TIMEOUT_S
        self._engine = create_async_engine(
            self._url, connect_args=connect_args, pool_pre_ping=True, pool_recycle=1800
        )
        if self._url.get_backend_name() == "sqlite":
            _sqlite_connection_setup(self._engine)
        self.retention_days = retention_days
        self._tombstone_seconds = tombstone_seconds
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    @property
    def where(self) -> str:
        """Where the history is, for people: the SQLite file or the Postgres host and database."""
        if self.backend == "sqlite":
            return str(self._url.database)
        return f"postgresql://{self._url.host or 'localhost'}/{self._url.database or ''}"

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    # -- connections -------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on a migrated database; any failure to answer is an outage."""
        try:
            async with asyncio.timeout(4 * TIMEOUT_S):
                await self._ensure_schema()
        except Exception as e:
            # Opening or migrating concerns every call alike (a folder, a server, a migration
            # script): an outage to wait out, never one call's refusal to skip.
            HISTORY_UP.set(0)
            raise HistoryUnavailableError(
                f"the call history database could not be opened ({type(e).__name__})"
            ) from e
        try:
            async with asyncio.timeout(4 * TIMEOUT_S), self._engine.begin() as connection:
                yield connection
        except (SQLAlchemyError, OSError, TimeoutError) as e:
            if not _unanswered(e):
                raise HistoryRefusedError(
                    f"the call history database refused a statement ({type(e).__name__})"
                ) from e
            HISTORY_UP.set(0)
            raise HistoryUnavailableError(
                f"the call history database did not answer ({type(e).__name__})"
            ) from e
        HISTORY_UP.set(1)

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            if self.backend == "sqlite" and self._url.database:
                Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
            async with self._engine.begin() as connection:
                await connection.run_sync(upgrade_schema)
            self._schema_ready = True

    async def ping(self) -> bool:
        """Whether the database answers (and its schema is up to date)."""
        try:
            async with self._transaction() as connection:
                await connection.execute(select(1))
        except HistoryUnavailableError:
            return False
        return True

    # -- writing -----------------------------------------------------------------------------

    async def save(self, caller: CallerIdentity, record: CallRecord) -> bool:
        """Write one call (insert, or update the stored one), its analysis and its transcript.

        Idempotent by call id. An analysed call is never replaced by an earlier state of it (a
        replayed close); a call of a caller forgotten after it began is refused.

        Args:
            caller: Whose call (the key and masked number are stored, never a number).
            record: The call as Redis holds it, with its transcript already scrubbed.

        Returns:
            False when nothing was written (refused, or the stored call is further along).

        Raises:
            HistoryUnavailableError: The database did not answer; nothing was written.
            HistoryRefusedError: The database refused the call; nothing was written.
        """
        row = _call_row(caller, record)
        async with self._transaction() as connection:
            await self._lock_caller(connection, caller)
            forgotten_at = await connection.scalar(
                select(forgotten.c.forgotten_at).where(
                    forgotten.c.agent_id == caller.agent_id,
                    forgotten.c.caller_key == caller.key,
                )
            )
            if forgotten_at is not None and record.started_at <= forgotten_at:
                return False
            upsert = _dialect_insert(connection)(calls).values(row)
            upsert = upsert.on_conflict_do_update(
                index_elements=[calls.c.agent_id, calls.c.call_id],
                set_={name: upsert.excluded[name] for name in row if name not in _KEY},
                where=or_(
                    calls.c.status != CallStatus.ANALYSED.value,
                    upsert.excluded.status == CallStatus.ANALYSED.value,
                ),
            ).returning(calls.c.call_id)
            if (await connection.execute(upsert)).first() is None:
                return False
            await connection.execute(delete(analyses).where(_key(analyses, record)))
            if record.analysis is not None:
                await connection.execute(insert(analyses).values(_analysis_row(record)))
            await connection.execute(delete(turns).where(_key(turns, record)))
            if record.transcript:
                await connection.execute(insert(turns), _turn_rows(record))
        return True

    async def _lock_caller(self, connection: AsyncConnection, caller: CallerIdentity) -> None:
        """Serialise writes and forgets of one caller (SQLite's BEGIN IMMEDIATE does already)."""
        if connection.dialect.name == "postgresql":
            await connection.execute(
                select(func.pg_advisory_xact_lock(func.hashtext(caller.hash_tag)))
            )

    async def forget(self, caller: CallerIdentity) -> int:
        """Delete every call of one caller (analyses and transcripts with them); leave a tombstone.

        Returns:
            How many calls were deleted.

        Raises:
            HistoryUnavailableError: The database did not answer; nothing was deleted.
        """
        at = now()
        async with self._transaction() as connection:
            await self._lock_caller(connection, caller)
            tombstone = _dialect_insert(connection)(forgotten).values(
                agent_id=caller.agent_id, caller_key=caller.key, forgotten_at=at
            )
            await connection.execute(
                tombstone.on_conflict_do_update(
                    index_elements=[forgotten.c.agent_id, forgotten.c.caller_key],
                    set_={"forgotten_at": at},
                )
            )
            deleted = await connection.execute(
                delete(calls).where(
                    calls.c.agent_id == caller.agent_id, calls.c.caller_key == caller.key
                )
            )
        return int(deleted.rowcount or 0)

    async def expire(self) -> int:
        """Delete the calls past ``retention_days`` and the tombstones past their window.

        Returns:
            How many calls were deleted.

        Raises:
            HistoryUnavailableError: The database did not answer.
        """
        async with self._transaction() as connection:
            await connection.execute(
                delete(forgotten).where(forgotten.c.forgotten_at < now() - self._tombstone_seconds)
            )
            if not self.retention_days:
                return 0
            cutoff = now() - self.retention_days * _DAY_S
            deleted = await connection.execute(
                delete(calls).where(
                    or_(
                        calls.c.ended_at < cutoff,
                        and_(calls.c.ended_at.is_(None), calls.c.started_at < cutoff),
                    )
                )
            )
        return int(deleted.rowcount or 0)

    # -- reading -----------------------------------------------------------------------------

    async def calls(
        self,
        agent_id: str,
        *,
        since: float,
        until: float | None = None,
        caller_key: str | None = None,
        action: str | None = None,
        min_urgency: int | None = None,
        transcripts: bool = False,
        offset: int = 0,
        limit: int = 500,
    ) -> list[HistoryCall]:
        """An agent's calls that ended in ``[since, until)``, newest first.

        Args:
            agent_id: Whose calls.
            since: Oldest end time included (epoch seconds).
            until: End times from this one on are left out (None: up to now).
            caller_key: Only this caller's calls.
            action: Only calls whose analysis chose this action.
            min_urgency: Only calls whose analysis rated them at least this urgent.
            transcripts: Load each call's transcript too.
            offset: Calls skipped (earlier pages).
            limit: Calls returned at most.

        Raises:
            HistoryUnavailableError: The database did not answer.
        """
        query = _joined().where(calls.c.agent_id == agent_id, calls.c.ended_at >= since)
        if until is not None:
            query = query.where(calls.c.ended_at < until)
        if caller_key is not None:
            query = query.where(calls.c.caller_key == caller_key)
        if action is not None:
            query = query.where(analyses.c.action == action)
        if min_urgency is not None:
            query = query.where(analyses.c.urgency >= min_urgency)
        query = query.order_by(calls.c.ended_at.desc(), calls.c.call_id).offset(offset)
        async with self._transaction() as connection:
            rows = (await connection.execute(query.limit(limit))).mappings().all()
            spoken = await _transcripts(connection, agent_id, rows) if transcripts else {}
        return [_history_call(row, spoken.get(row["call_id"], [])) for row in rows]

    async def call(self, agent_id: str, call_id: str) -> HistoryCall | None:
        """One call with its transcript, or None when the history does not hold it.

        Raises:
            HistoryUnavailableError: The database did not answer.
        """
        query = _joined().where(calls.c.agent_id == agent_id, calls.c.call_id == call_id)
        async with self._transaction() as connection:
            row = (await connection.execute(query)).mappings().first()
            if row is None:
                return None
            spoken = await _transcripts(connection, agent_id, [row])
        return _history_call(row, spoken.get(call_id, []))

    async def caller_calls(self, caller: CallerIdentity) -> list[HistoryCall]:
        """Every call of one caller, oldest first, with transcripts (a caller's export).

        Raises:
            HistoryUnavailableError: The database did not answer.
        """
        query = (
            _joined()
            .where(calls.c.agent_id == caller.agent_id, calls.c.caller_key == caller.key)
            .order_by(calls.c.started_at, calls.c.call_id)
        )
        async with self._transaction() as connection:
            rows = (await connection.execute(query)).mappings().all()
            spoken = await _transcripts(connection, caller.agent_id, rows)
        return [_history_call(row, spoken.get(row["call_id"], [])) for row in rows]

    async def export(
        self, agent_id: str, *, since: float, until: float | None = None
    ) -> AsyncIterator[HistoryCall]:
        """Every call of an agent that ended in ``[since, until)``, with transcripts, newest first.

        Read ``EXPORT_BATCH`` calls at a time.

        Raises:
            HistoryUnavailableError: The database did not answer.
        """
        offset = 0
        while True:
            page = await self.calls(
                agent_id,
                since=since,
                until=until,
                transcripts=True,
                offset=offset,
                limit=EXPORT_BATCH,
            )
            for found in page:
                yield found
            if len(page) < EXPORT_BATCH:
                return
            offset += len(page)


_KEY = frozenset({"agent_id", "call_id"})
#: SQLSTATE classes of a server that cannot answer now: connection exception, insufficient
#: resources, operator intervention (shutting down, starting up), transaction rollback.
_RETRYABLE_SQLSTATE = ("08", "53", "57", "40")


def _unanswered(error: BaseException) -> bool:
    """Whether ``error`` means the database could not answer (retry later), not a refusal."""
    if isinstance(error, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    if isinstance(error, DBAPIError):
        code = str(getattr(error.orig, "pgcode", None) or "")
        return error.connection_invalidated or code.startswith(_RETRYABLE_SQLSTATE)
    return False


def _dialect_insert(connection: AsyncConnection) -> Any:
    """The INSERT with ``ON CONFLICT`` of the connection's database."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def _key(table: Any, record: CallRecord) -> Any:
    return and_(table.c.agent_id == record.agent_id, table.c.call_id == record.call_id)


def _call_row(caller: CallerIdentity, record: CallRecord) -> dict[str, Any]:
    report = record.report
    transfer = record.transfer
    duration = record.ended_at - record.started_at if record.ended_at is not None else None
    return {
        "agent_id": record.agent_id,
        "call_id": record.call_id,
        "caller_key": caller.key,
        "masked_number": caller.masked or record.masked_number,
        "status": record.status.value,
        "trust": record.trust.value if record.trust else None,
        "language": record.language,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "ended_reason": record.ended_reason,
        "duration_s": round(duration, 3) if duration is not None else None,
        "transfer_target": transfer.target if transfer else None,
        "transfer_reason": transfer.reason if transfer else None,
        "transferred_at": transfer.at if transfer else None,
        "error": record.error,
        "cost": report.cost.total if report else None,
        "currency": report.cost.currency if report else None,
        "report": report.model_dump(mode="json") if report else None,
        "recorded_at": now(),
    }


def _analysis_row(record: CallRecord) -> dict[str, Any]:
    analysis = record.analysis
    assert analysis is not None
    return {
        "agent_id": record.agent_id,
        "call_id": record.call_id,
        "summary": analysis.summary,
        "urgency": analysis.urgency,
        "action": analysis.action,
        "sentiment": analysis.sentiment.value,
        "language": analysis.language,
        "caller_name": analysis.caller_name,
        "fields": analysis.fields,
        "dropped_fields": analysis.dropped_fields,
    }


def _turn_rows(record: CallRecord) -> list[dict[str, Any]]:
    return [
        {
            "agent_id": record.agent_id,
            "call_id": record.call_id,
            "seq": seq,
            "role": turn.role,
            "text": turn.text,
            "at": turn.at,
        }
        for seq, turn in enumerate(record.transcript)
    ]


def _joined() -> Any:
    """Calls with their analysis (when there is one), analysis columns prefixed ``a_``."""
    analysis = [
        column.label(f"a_{column.name}") for column in analyses.c if column.name not in _KEY
    ]
    return select(calls, *analysis).select_from(
        calls.outerjoin(
            analyses,
            and_(analyses.c.agent_id == calls.c.agent_id, analyses.c.call_id == calls.c.call_id),
        )
    )


async def _transcripts(
    connection: AsyncConnection, agent_id: str, rows: Sequence[Any]
) -> dict[str, list[Turn]]:
    ids = [row["call_id"] for row in rows]
    if not ids:
        return {}
    query = (
        select(turns.c.call_id, turns.c.role, turns.c.text, turns.c.at)
        .where(turns.c.agent_id == agent_id, turns.c.call_id.in_(ids))
        .order_by(turns.c.call_id, turns.c.seq)
    )
    spoken: dict[str, list[Turn]] = {}
    for call_id, role, text, at in (await connection.execute(query)).all():
        spoken.setdefault(call_id, []).append(Turn(role=role, text=text, at=at, call_id=call_id))
    return spoken


def _history_call(row: Any, transcript: list[Turn]) -> HistoryCall:
    analysis = (
        CallAnalysis(
            summary=row["a_summary"],
            urgency=row["a_urgency"],
            action=row["a_action"],
            sentiment=row["a_sentiment"],
            language=row["a_language"],
            caller_name=row["a_caller_name"],
            fields=row["a_fields"] or {},
            dropped_fields=row["a_dropped_fields"] or {},
        )
        if row["a_summary"] is not None
        else None
    )
    transfer = (
        CallTransfer(
            target=row["transfer_target"],
            reason=row["transfer_reason"] or "",
            at=row["transferred_at"] or row["started_at"],
        )
        if row["transfer_target"] is not None
        else None
    )
    record = CallRecord(
        call_id=row["call_id"],
        agent_id=row["agent_id"],
        status=CallStatus(row["status"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        ended_reason=row["ended_reason"],
        language=row["language"],
        transcript=transcript,
        analysis=analysis,
        masked_number=row["masked_number"],
        trust=row["trust"],
        transfer=transfer,
        error=row["error"],
        report=CallReport.model_validate(row["report"]) if row["report"] else None,
    )
    caller = CallerIdentity(
        agent_id=row["agent_id"], key=row["caller_key"], masked=row["masked_number"] or ""
    )
    return HistoryCall(caller=caller, record=record)
