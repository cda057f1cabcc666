"""The append-only, keyed hash chain of the audit trail, and its signed checkpoints.

Each row's ``hash`` is ``"hmac-sha256:" + HMAC-SHA256(key, prev_hash + canonical JSON of the row's
fields)``; the first row's ``prev_hash`` is :data:`GENESIS`. The key lives outside the database
(:mod:`careloop.engine.audit_key`), so whoever can write to the database but does not hold the key
cannot recompute a chain that verifies. Rows written before migration 0014 keep the older unkeyed
``"sha256:"`` chain; the signed :class:`AuditAnchor` records where it ended and the keyed chain
continues from its last hash.

The database refuses UPDATE and DELETE on the audit tables (triggers, ``audit_guard``). Signed
checkpoints (last id, row count, last hash, time) are appended to a file outside the database
(:func:`checkpoint`, the ``audit.checkpoint`` tick), so a truncated or re-chained table is
detected by :func:`verify` even by someone who removed the triggers. Details must not carry
personal data beyond the patient id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.orm import Session

from careloop.engine.audit_key import KEY_ENV, key_file, load_key
from careloop.engine.check import canonical_json
from careloop.engine.clock import now_utc, to_local
from careloop.engine.db import home, transaction
from careloop.engine.models import AuditAnchor, AuditRow

GENESIS = "sha256:" + "0" * 64
LEGACY = "sha256:"
KEYED = "hmac-sha256:"
_LOCK_ID = 0x6361_7265  # "care": serialises chain appends across processes on PostgreSQL

CHECKPOINTS_ENV = "CARELOOP_AUDIT_CHECKPOINTS"
INTERVAL_ENV = "CARELOOP_AUDIT_CHECKPOINT_MINUTES"
SYSLOG_ENV = "CARELOOP_AUDIT_SYSLOG"
_TAIL_BYTES = 8192

log = logging.getLogger("careloop.audit")


def _legacy_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = prev_hash + canonical_json(fields)
    return LEGACY + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _sign(key: bytes, payload: str) -> str:
    return KEYED + hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def _row_hash(key: bytes, prev_hash: str, fields: dict[str, Any]) -> str:
    return _sign(key, prev_hash + canonical_json(fields))


def key_id(key: bytes) -> str:
    """A fingerprint of the key (names it in the anchor without revealing it)."""
    return hmac.new(key, b"careloop audit key id", hashlib.sha256).hexdigest()[:16]


def _fields(row: AuditRow) -> dict[str, Any]:
    at: datetime = row.at
    return {
        "at": at.isoformat(timespec="microseconds"), "actor": row.actor,
        "actor_role": row.actor_role, "ip": row.ip, "action": row.action,
        "object_type": row.object_type, "object_id": row.object_id,
        "patient_id": row.patient_id, "outcome": row.outcome, "request_id": row.request_id,
        "details": row.details,
    }


def _writing(session: Session) -> bool:
    """SQLite: whether this transaction holds the write lock already. pysqlite says ``BEGIN``
    only right before a write (INSERT, UPDATE, DELETE: the write takes the lock at once, and
    keeps it till the commit) and ``careloop.engine.db`` says ``BEGIN IMMEDIATE``; so a
    connection inside a transaction holds the lock, and the audit row need not take it again."""
    dbapi = session.connection().connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))


# Built once: the chain's lock (PostgreSQL), its head, and the row's insert (Core: no unit of
# work for a row nobody changes; its id comes back as the insert's primary key).
_LOCK = text("SELECT pg_advisory_xact_lock(:id)")
_HEAD = select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)
_INSERT = insert(AuditRow.__table__)  # type: ignore[arg-type]


_KEY_SEEN: list[tuple[tuple[Any, ...], bytes]] = []


def _append_key() -> bytes:
    """:func:`load_key` for a row's hash, read again only when the key file changed (its
    inode, size or modification time; ``CARELOOP_AUDIT_KEY`` is read each time)."""
    if os.environ.get(KEY_ENV, "").strip():
        return load_key()
    path = key_file()
    try:
        stat = os.stat(path)
    except OSError:
        return load_key()  # made now, or the error that names the missing key
    seen = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if _KEY_SEEN and _KEY_SEEN[0][0] == seen:
        return _KEY_SEEN[0][1]
    key = load_key()
    _KEY_SEEN[:] = [(seen, key)]
    return key


def append(session: Session, *, actor: str, action: str, object_type: str | None = None,
           object_id: str | None = None, patient_id: str | None = None,
           outcome: str = "success", details: dict[str, Any] | None = None,
           actor_role: str | None = None, ip: str | None = None,
           request_id: str | None = None) -> AuditRow:
    """Add one audit row in the caller's transaction: it commits or rolls back with the action.

    The row is inserted at once (one Core ``INSERT``, the caller's pending changes flushed
    before the chain's head is read); the returned :class:`AuditRow` carries its id and is not
    attached to the session."""
    key = _append_key()
    session.flush()  # the caller's pending rows first, as a flush of the audit row did
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(_LOCK, {"id": _LOCK_ID})
    elif dialect == "sqlite" and not _writing(session):
        # Take the write lock before reading the last hash: pysqlite begins a transaction only
        # at the first write, so another thread's row could land between the read and the
        # insert and fork the chain. A write that changes nothing holds the lock till commit.
        connection.execute(text("UPDATE audit_anchor SET id = id WHERE 1 = 0"))
    last = connection.execute(_HEAD).scalar()
    row = AuditRow(
        at=now_utc(), actor=actor, actor_role=actor_role, ip=ip, action=action,
        object_type=object_type, object_id=object_id, patient_id=patient_id, outcome=outcome,
        request_id=request_id, details=details or {}, prev_hash=last or GENESIS,
    )
    fields = _fields(row)
    row.hash = _row_hash(key, row.prev_hash, fields)
    values = {**fields, "at": row.at, "prev_hash": row.prev_hash, "hash": row.hash}
    row.id = connection.execute(_INSERT, values).inserted_primary_key[0]  # type: ignore[index]
    return row


def row_count() -> Any:
    """``SELECT count(*)`` of the audit table."""
    return select(func.count()).select_from(AuditRow)


# --- the anchor: where the keyed chain starts ------------------------------------------------

def _anchor_payload(chain_id: str, legacy_last_id: int, legacy_last_hash: str,
                    legacy_count: int, kid: str) -> str:
    return canonical_json({"chain": chain_id, "legacy_last_id": legacy_last_id,
                           "legacy_last_hash": legacy_last_hash,
                           "legacy_count": legacy_count, "key_id": kid})


def anchor_values(connection: Connection) -> dict[str, Any]:
    """The anchor row for a database's current audit table (migration 0014 inserts it): the
    legacy chain's last id, hash and row count, a fresh chain id, signed with the key."""
    key = load_key()
    last = connection.execute(text(
        "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")).first()
    count = int(connection.execute(text("SELECT count(*) FROM audit_log")).scalar_one())
    last_id, last_hash = (int(last[0]), str(last[1])) if last is not None else (0, GENESIS)
    chain_id = secrets.token_hex(16)
    kid = key_id(key)
    return {"at": now_utc(), "chain_id": chain_id, "legacy_last_id": last_id,
            "legacy_last_hash": last_hash, "legacy_count": count, "key_id": kid,
            "signature": _sign(key, _anchor_payload(chain_id, last_id, last_hash, count, kid))}


def _anchor(session: Session) -> AuditAnchor | None:
    return session.scalars(select(AuditAnchor).order_by(AuditAnchor.id).limit(1)).first()


# --- checkpoints -----------------------------------------------------------------------------

def checkpoint_path() -> Path | None:
    """The checkpoint file (``CARELOOP_AUDIT_CHECKPOINTS``; ``off`` disables checkpoints), by
    default ``var/audit-checkpoints.jsonl``."""
    raw = os.environ.get(CHECKPOINTS_ENV, "").strip()
    if raw.lower() == "off":
        return None
    return Path(raw) if raw else home() / "var" / "audit-checkpoints.jsonl"


def _checkpoint_payload(entry: dict[str, Any]) -> str:
    return canonical_json({k: v for k, v in entry.items() if k != "sig"})


def checkpoint(session: Session, path: Path | None = None) -> dict[str, Any]:
    """Append one signed checkpoint of the table as it is now to the checkpoint file (and to
    syslog when ``CARELOOP_AUDIT_SYSLOG`` names a socket path or ``host:port``)."""
    path = path or checkpoint_path()
    if path is None:
        raise ValueError(f"audit checkpoints are off ({CHECKPOINTS_ENV}=off)")
    key = load_key()
    anchor = _anchor(session)
    # One statement, so one snapshot: read apart, a row committed between the two reads made
    # the checkpoint count a row past its last id (and verification call the trail cut).
    last = session.execute(select(AuditRow.id, AuditRow.hash, row_count().scalar_subquery())
                           .order_by(AuditRow.id.desc()).limit(1)).first()
    count = int(last[2]) if last is not None else 0
    entry: dict[str, Any] = {
        "chain": anchor.chain_id if anchor is not None else None,
        "at": now_utc().isoformat(timespec="seconds"),
        "last_id": int(last[0]) if last is not None else 0,
        "count": count, "last_hash": str(last[1]) if last is not None else GENESIS}
    entry["sig"] = _sign(key, _checkpoint_payload(entry))
    line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(line + "\n")
    _to_syslog(line)
    return entry


def _to_syslog(line: str) -> None:
    target = os.environ.get(SYSLOG_ENV, "").strip()
    if not target:
        return
    address: str | tuple[str, int] = target
    if ":" in target and not target.startswith("/"):
        host, _, port = target.rpartition(":")
        address = (host, int(port))
    handler = logging.handlers.SysLogHandler(address=address)
    try:
        handler.emit(logging.LogRecord("careloop.audit", logging.INFO, __file__, 0,
                                       "careloop audit checkpoint %s", (line,), None))
    finally:
        handler.close()


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(tail[-1]) if tail else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def interval() -> timedelta:
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    return timedelta(minutes=float(raw) if raw else 60.0)


def checkpoint_tick(engine: Engine) -> None:
    """The ``audit.checkpoint`` tick: a checkpoint when the last one in the file is older than
    ``CARELOOP_AUDIT_CHECKPOINT_MINUTES`` (60) and the table grew since."""
    path = checkpoint_path()
    if path is None:
        return
    with transaction(engine) as session:
        last = _last_line(path)
        anchor = _anchor(session)
        if last is not None and anchor is not None and last.get("chain") == anchor.chain_id:
            try:
                at = datetime.fromisoformat(str(last.get("at")))
            except ValueError:
                at = None
            newest = session.scalar(select(func.max(AuditRow.id))) or 0
            if at is not None and (now_utc() - at < interval() or newest == last.get("last_id")):
                return
        checkpoint(session, path)


# --- verification ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuditBreak:
    """Where the trail is broken and why (``row_id`` is None for a checkpoint's finding)."""

    row_id: int | None
    reason: str

    def render(self) -> str:
        return f"row {self.row_id}: {self.reason}" if self.row_id is not None else self.reason


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    where: str
    at: datetime
    last_id: int
    count: int
    last_hash: str

    @property
    def shown(self) -> str:
        return f"checkpoint at {to_local(self.at):%Y-%m-%d %H:%M}"


def _read_checkpoints(path: Path, key: bytes, chain_id: str | None
                      ) -> tuple[list[_Checkpoint], list[AuditBreak]]:
    found: list[_Checkpoint] = []
    problems: list[AuditBreak] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return found, problems
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            assert isinstance(entry, dict)
            sig = str(entry["sig"])
            point = _Checkpoint(where, datetime.fromisoformat(str(entry["at"])),
                                int(entry["last_id"]), int(entry["count"]),
                                str(entry["last_hash"]))
        except (ValueError, KeyError, TypeError, AssertionError):
            problems.append(AuditBreak(None, f"{where}: not a checkpoint line"))
            continue
        if not hmac.compare_digest(sig, _sign(key, _checkpoint_payload(entry))):
            problems.append(AuditBreak(None, f"{where}: checkpoint signature does not match "
                                             "(the line was altered or forged)"))
            continue
        if chain_id is not None and entry.get("chain") != chain_id:
            continue  # a checkpoint of another database (e.g. a builder simulation)
        if point.at.tzinfo is None:
            problems.append(AuditBreak(None, f"{where}: checkpoint time has no offset"))
            continue
        found.append(point)
    return found, problems


def verify(session: Session, batch: int = 1000, *,
           checkpoints: Path | None = None, use_checkpoints: bool = True
           ) -> Iterator[AuditBreak]:
    """Walk the chain in id order and yield every break: a changed, inserted, deleted or moved
    row, a chain recomputed without the key, and rows the signed checkpoints saw that the table
    no longer has (``checkpoints``: the file, by default :func:`checkpoint_path`)."""
    key = load_key(create=False)
    anchor = _anchor(session)
    legacy_end = 0
    chain_id: str | None = None
    if anchor is None:
        yield AuditBreak(None, "the audit chain's anchor (audit_anchor) is missing: it was "
                               "deleted, or the database was not upgraded (careloop db upgrade)")
    else:
        chain_id = anchor.chain_id
        expected = _sign(key, _anchor_payload(anchor.chain_id, anchor.legacy_last_id,
                                              anchor.legacy_last_hash, anchor.legacy_count,
                                              anchor.key_id))
        if anchor.key_id != key_id(key):
            yield AuditBreak(None, "the audit key is not the key this chain was started with "
                                   f"(key {anchor.key_id}; this key is {key_id(key)})")
        elif not hmac.compare_digest(anchor.signature, expected):
            yield AuditBreak(None, "the audit chain's anchor was altered (signature mismatch)")
        legacy_end = anchor.legacy_last_id
    points: list[_Checkpoint] = []
    path = checkpoints or (checkpoint_path() if use_checkpoints else None)
    if path is not None:
        points, problems = _read_checkpoints(path, key, chain_id)
        yield from problems
    wanted = {p.last_id for p in points}
    seen: dict[int, tuple[int, str]] = {}  # checkpoint last id -> (rows up to it, its hash)
    expected_prev = GENESIS
    prev_id: int | None = None
    last_id = 0
    count = 0
    legacy_seen = legacy_end == 0
    while True:
        rows = session.scalars(select(AuditRow).where(AuditRow.id > last_id)
                               .order_by(AuditRow.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            count += 1
            if row.prev_hash != expected_prev:
                before = f"row {prev_id}'s hash" if prev_id is not None else "the chain's start"
                yield AuditBreak(row.id, f"previous hash does not match {before}: a row before "
                                         "it was changed, deleted or moved")
            legacy = row.id <= legacy_end
            fields = _fields(row)
            good = (_legacy_hash(row.prev_hash, fields) == row.hash if legacy
                    else hmac.compare_digest(row.hash, _row_hash(key, row.prev_hash, fields)))
            if not good:
                yield AuditBreak(row.id, "hash mismatch: the row was changed" + (
                    "" if legacy or row.hash.startswith(KEYED)
                    else " (its hash was computed without the audit key)"))
            if anchor is not None and row.id == legacy_end:
                legacy_seen = True
                if row.hash != anchor.legacy_last_hash or count != anchor.legacy_count:
                    yield AuditBreak(row.id, f"the chain before the keyed chain ended here with "
                                             f"{anchor.legacy_count:,} rows and another hash")
            if row.id in wanted:
                seen[row.id] = (count, row.hash)
            expected_prev = row.hash
            prev_id = last_id = row.id
    if not legacy_seen:
        yield AuditBreak(legacy_end, "missing: the chain before the keyed chain ended at this row")
    for point in points:
        yield from _check_point(point, seen.get(point.last_id), count, last_id)


def _check_point(point: _Checkpoint, found: tuple[int, str] | None, total: int,
                 table_end: int) -> Iterator[AuditBreak]:
    if point.last_id == 0:
        return
    if found is None:
        if table_end < point.last_id or total < point.count:
            yield AuditBreak(None, f"{point.shown} saw {point.count:,} rows; table ends at "
                                   f"{total:,} (row {point.last_id:,} is missing: rows were "
                                   "deleted)")
        else:
            yield AuditBreak(None, f"{point.shown} saw row {point.last_id:,}; it is missing")
        return
    rows, row_hash = found
    if rows != point.count:
        yield AuditBreak(None, f"{point.shown} saw {point.count:,} rows up to row "
                               f"{point.last_id:,}; the table has {rows:,} there (rows were "
                               f"{'deleted' if rows < point.count else 'inserted'})")
    if row_hash != point.last_hash:
        yield AuditBreak(point.last_id, f"hash differs from the one the {point.shown} saw "
                                        "(the chain was recomputed)")
