"""Backups: one archive holding the database, the uploaded files and the audit checkpoints.

``careloop backup create`` writes a gzip'd tar::

    manifest.json                     format, Careloop version, created_at (hospital time),
                                      dialect, schema revisions, rows per table, sha256 of parts,
                                      where the audit key is (never the key itself)
    database.sqlite3 | database.pgdump
    files/audit-checkpoints.jsonl     the signed audit checkpoints, copied before the snapshot
    files/uploads/<sha256>            uploaded files, copied after the snapshot

SQLite is copied with the online backup API (``sqlite3.Connection.backup``: one consistent
snapshot, committed WAL frames included, writers keep writing); PostgreSQL with ``pg_dump -Fc``
run on a snapshot exported from a REPEATABLE READ transaction, in which the rows are counted, so
the manifest's counts are the dump's. Checkpoints are copied before the snapshot (each one then
describes rows the snapshot has) and uploads after it (every file an answer in the snapshot
refers to is already written).

The audit key stays out of the archive on purpose: whoever holds a backup and its key could
re-sign a forged chain. The manifest names where the key is and its fingerprint; keep a copy of
the key apart from the backups. :func:`restore` refuses a key that is not the backup's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from careloop.engine.db import default_engine, home, make_engine, redact
from careloop.engine.errors import CareloopError

FORMAT = 1
MANIFEST = "manifest.json"
CHECKPOINTS = "files/audit-checkpoints.jsonl"
UPLOADS = "files/uploads/"
PG_DUMP = os.environ.get("CARELOOP_PG_DUMP", "pg_dump")
PG_RESTORE = os.environ.get("CARELOOP_PG_RESTORE", "pg_restore")


class BackupError(CareloopError):
    """Raised when a backup cannot be made, read or restored; the message says why and what to
    do (an archive that fails its hashes, a target database that is not empty, another key)."""


def uploads_dir() -> Path:
    """Where uploaded files live (``forms.pages.store_upload``): ``var/uploads``."""
    return home() / "var" / "uploads"


# --- small helpers -----------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_now() -> str:
    from careloop.engine.clock import now_utc, to_local

    return to_local(now_utc()).isoformat(timespec="seconds")


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump/pg_restore, and the environment carrying the
    password (never on the command line, where ``ps`` shows it)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {first}")


def _schema(connection: Connection) -> str | None:
    return str(connection.scalar(text("SELECT current_schema()")) or "") or None


def count_rows(connection: Connection, schema: str | None = None) -> dict[str, int]:
    """Rows per table (every table, ``alembic_version`` included), by name."""
    names = sorted(inspect(connection).get_table_names(schema=schema))
    prefix = f'"{schema}".' if schema else ""
    return {name: int(connection.scalar(text(f'SELECT count(*) FROM {prefix}"{name}"')) or 0)
            for name in names}


def _revisions(counts: dict[str, int], connection: Connection, schema: str | None) -> list[str]:
    if "alembic_version" not in counts:
        return []
    prefix = f'"{schema}".' if schema else ""
    return sorted(str(r) for r in connection.scalars(
        text(f"SELECT version_num FROM {prefix}alembic_version")))


def _key_reference() -> dict[str, Any]:
    from careloop.engine import audit_key
    from careloop.engine.audit import key_id

    where = (f"environment variable {audit_key.KEY_ENV}"
             if os.environ.get(audit_key.KEY_ENV, "").strip() else str(audit_key.key_file()))
    try:
        kid: str | None = key_id(audit_key.load_key(create=False))
    except audit_key.AuditKeyError:
        kid = None
    return {"included": False, "location": where, "key_id": kid}


# --- snapshots ---------------------------------------------------------------------------------

def _snapshot_sqlite(engine: Engine, target: Path) -> tuple[dict[str, int], list[str], None]:
    source_path = engine.url.database
    if not source_path or source_path == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    if not Path(source_path).exists():
        raise BackupError(f"no database file at {source_path}")
    source = sqlite3.connect(source_path, timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # all pages in one step: one consistent snapshot
        copy.execute("PRAGMA journal_mode=DELETE")  # a standalone file, no -wal beside it
    finally:
        source.close()
        copy.close()
    scratch = make_engine(f"sqlite:///{target}")
    try:
        with scratch.connect() as connection:
            counts = count_rows(connection)
            return counts, _revisions(counts, connection, None), None
    finally:
        scratch.dispose()


def _snapshot_postgres(engine: Engine, target: Path) -> tuple[dict[str, int], list[str], str]:
    dsn, env = _libpq(engine.url)
    connection = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connection, connection.begin():  # the snapshot lives until pg_dump has run
        snapshot = str(connection.scalar(text("SELECT pg_export_snapshot()")))
        schema = _schema(connection) or "public"
        counts = count_rows(connection, schema)
        revisions = _revisions(counts, connection, schema)
        argv = [PG_DUMP, "--format=custom", "--no-owner", "--no-privileges",
                f"--snapshot={snapshot}", f"--file={target}"]
        if schema != "public":
            argv.append(f"--schema={schema}")
        _run([*argv, dsn], env)
    return counts, revisions, schema


# --- create --------------------------------------------------------------------------------------

def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    with path.open("rb") as f:
        tar.addfile(info, f)


def create(output: Path, engine: Engine | None = None, *, uploads: Path | None = None,
           checkpoints: Path | None = None, actor: str = "cli") -> dict[str, Any]:
    """Write one backup archive to ``output`` (mode 0600, written aside and renamed into place)
    and return its manifest. The backup itself is an audited access to every patient's data."""
    from careloop.engine import audit
    from careloop.engine.db import transaction

    engine = engine or default_engine()
    uploads = uploads or uploads_dir()
    checkpoints = checkpoints if checkpoints is not None else audit.checkpoint_path()
    output.parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as connection:  # an older schema (before upgrade) has no keyed chain
        keyed = "audit_anchor" in inspect(connection).get_table_names()
    if keyed:
        with transaction(engine) as session:
            audit.append(session, actor=actor, action="backup.create", object_type="backup",
                         object_id=output.name)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".careloop-backup-") as tmp:
        work = Path(tmp)
        parts: dict[str, Path] = {}
        if checkpoints is not None and checkpoints.exists():  # before the snapshot
            shutil.copyfile(checkpoints, work / "checkpoints")
            parts[CHECKPOINTS] = work / "checkpoints"
        dialect = engine.dialect.name
        name = "database.sqlite3" if dialect == "sqlite" else "database.pgdump"
        if dialect == "sqlite":
            counts, revisions, schema = _snapshot_sqlite(engine, work / name)
        elif dialect == "postgresql":
            counts, revisions, schema = _snapshot_postgres(engine, work / name)
        else:
            raise BackupError(f"no backup method for {dialect}")
        parts[name] = work / name
        if uploads.is_dir():  # after the snapshot: every file it refers to exists
            for item in sorted(uploads.iterdir()):
                if item.is_file():
                    parts[UPLOADS + item.name] = item
        manifest: dict[str, Any] = {
            "format": FORMAT, "careloop": _version(), "created_at": _local_now(),
            "dialect": dialect, "database": redact(engine.url.render_as_string(False)),
            "schema": schema, "revisions": revisions, "tables": counts,
            "rows": sum(counts.values()), "uploads": sum(p.startswith(UPLOADS) for p in parts),
            "audit_key": _key_reference(),
            "parts": {p: {"sha256": _sha256(path), "bytes": path.stat().st_size}
                      for p, path in parts.items()},
        }
        partial = work / "archive"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            body = json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(body), 0o600
            tar.addfile(info, io.BytesIO(body))
            for part, path in parts.items():
                _add(tar, part, path)
        os.replace(partial, output)
    return manifest


def _version() -> str:
    from careloop import __version__

    return __version__


# --- read and check ------------------------------------------------------------------------------

@dataclass(slots=True)
class Opened:
    """An archive unpacked into a temporary folder, its parts checked against the manifest."""

    manifest: dict[str, Any]
    folder: Path
    problems: list[str] = field(default_factory=list)

    def part(self, name: str) -> Path | None:
        path = self.folder / name
        return path if name in self.manifest["parts"] and path.is_file() else None

    @property
    def database(self) -> Path:
        name = "database.sqlite3" if self.manifest["dialect"] == "sqlite" else "database.pgdump"
        path = self.part(name)
        if path is None:
            raise BackupError(f"the archive has no {name}")
        return path


@contextmanager
def opened(archive: Path) -> Iterator[Opened]:
    """Unpack ``archive`` (regular files only, no path leaving the folder) and check each
    part's sha256 and size against the manifest; problems are listed, not raised."""
    with tempfile.TemporaryDirectory(prefix="careloop-restore-") as tmp:
        folder = Path(tmp)
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                tar.extractall(folder, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BackupError(f"{archive} cannot be unpacked ({exc}): it is not a Careloop "
                              "backup, or it is truncated or damaged") from None
        try:
            manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError):
            raise BackupError(f"{archive} has no readable {MANIFEST}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BackupError(f"{archive}: backup format {manifest.get('format')!r} is not "
                              f"{FORMAT} (made by another Careloop version)")
        found = Opened(manifest, folder)
        for name, expected in sorted(manifest["parts"].items()):
            path = folder / name
            if not path.is_file():
                found.problems.append(f"{name}: missing from the archive")
            elif _sha256(path) != expected["sha256"] or path.stat().st_size != expected["bytes"]:
                found.problems.append(f"{name}: sha256 differs from the manifest (damaged)")
        for path in folder.rglob("*"):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and name != MANIFEST and name not in manifest["parts"]:
                found.problems.append(f"{name}: in the archive but not in the manifest")
        yield found


# --- load a database part --------------------------------------------------------------------

def _target_tables(engine: Engine, schema: str | None) -> int:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return int(connection.scalar(text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema or "public"}) or 0)
        return len(inspect(connection).get_table_names())


def _load(found: Opened, engine: Engine, *, clean: bool) -> dict[str, int]:
    """Load the archive's database into ``engine``'s database; the rows per table there."""
    manifest = found.manifest
    if engine.dialect.name != manifest["dialect"]:
        raise BackupError(f"the backup is of a {manifest['dialect']} database; the target is "
                          f"{engine.dialect.name}")
    schema = manifest.get("schema")
    if engine.dialect.name == "sqlite":
        target = engine.url.database
        if not target or target == ":memory:":
            raise BackupError("restore needs a SQLite file, not an in-memory database")
        engine.dispose()
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(found.database)
        copy = sqlite3.connect(target, timeout=30)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=WAL")
        finally:
            source.close()
            copy.close()
    else:
        dsn, env = _libpq(engine.url)
        _extensions(engine)
        argv = [PG_RESTORE, "--no-owner", "--no-privileges", "--exit-on-error",
                "--single-transaction", f"--dbname={dsn}"]
        if clean:
            argv += ["--clean", "--if-exists"]
        _run([*argv, str(found.database)], env)
    with engine.connect() as connection:
        return count_rows(connection, schema if engine.dialect.name == "postgresql" else None)


def _extensions(engine: Engine) -> None:
    """The extensions the schema's indexes use (``pg_trgm``: patient search, migration 0032),
    made in the target database before the restore: a dump of one schema does not carry them.
    Where the database refuses (no privilege), the restore says what failed, as before."""
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    except SQLAlchemyError:
        pass


def _compare(expected: dict[str, int], found: dict[str, int]) -> list[str]:
    return [f"table {name}: {found.get(name, 0):,} rows restored, the manifest says {rows:,}"
            for name, rows in sorted(expected.items()) if found.get(name, 0) != rows]


# --- verify --------------------------------------------------------------------------------------

@dataclass(slots=True)
class Verification:
    """What :func:`verify` found: ``problems`` make the backup unusable, ``notes`` do not."""

    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    restored_rows: int = 0
    audit_rows: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@contextmanager
def scratch_database(manifest: dict[str, Any], like: Engine | None = None) -> Iterator[Engine]:
    """An empty database of the backup's kind to restore into and drop: a temporary SQLite
    file, or a new PostgreSQL database ``careloop_verify_<random>`` on ``like``'s server (the
    configured one by default; its role needs CREATEDB)."""
    if manifest["dialect"] == "sqlite":
        with tempfile.TemporaryDirectory(prefix="careloop-verify-") as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
            try:
                yield engine
            finally:
                engine.dispose()
        return
    server = like if like is not None and like.dialect.name == "postgresql" else None
    admin_url = make_url((server or default_engine()).url.render_as_string(False))
    if admin_url.get_backend_name() != "postgresql":
        raise BackupError("verifying a PostgreSQL backup needs a PostgreSQL server: set "
                          "CARELOOP_DATABASE_URL")
    name = f"careloop_verify_{secrets.token_hex(4)}"
    admin = make_engine(admin_url.render_as_string(False), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        schema = manifest.get("schema") or "public"
        engine = make_engine(admin_url.set(database=name).render_as_string(False),
                             connect_args={"options": f"-csearch_path={schema}"})
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


def verify(archive: Path, *, restore_check: bool = True,
           server: Engine | None = None) -> Verification:
    """Check an archive: the manifest, every part's sha256, and (``restore_check``) that it
    restores — into a scratch database, the rows per table counted against the manifest and
    the audit chain verified there with the archive's checkpoints when the key here is the
    backup's."""
    with opened(archive) as found:
        result = Verification(found.manifest, list(found.problems))
        if result.problems or not restore_check:
            return result
        with scratch_database(found.manifest, server) as scratch:
            counts = _load(found, scratch, clean=False)
            result.problems += _compare(found.manifest["tables"], counts)
            result.restored_rows = sum(counts.values())
            _verify_audit(found, scratch, result)
        return result


def _verify_audit(found: Opened, engine: Engine, result: Verification) -> None:
    from careloop.engine import audit
    from careloop.engine.audit_key import AuditKeyError
    from careloop.engine.db import transaction

    if "audit_anchor" not in found.manifest["tables"]:
        result.notes.append("audit chain not checked: the schema is older than the keyed chain "
                            "(revision 0014); it is anchored on upgrade")
        return
    try:
        here = audit.key_id(_load_key())
    except AuditKeyError as exc:
        result.notes.append(f"audit chain not checked: {exc}")
        return
    wanted = found.manifest["audit_key"].get("key_id")
    if wanted is not None and here != wanted:
        result.notes.append(f"audit chain not checked: the key here ({here}) is not the "
                            f"backup's ({wanted})")
        return
    with transaction(engine) as session:
        breaks = list(audit.verify(session, checkpoints=found.part(CHECKPOINTS),
                                   use_checkpoints=found.part(CHECKPOINTS) is not None))
        result.audit_rows = int(session.scalar(audit.row_count()) or 0)
    result.problems += [f"audit: {b.render()}" for b in breaks]


def _load_key() -> bytes:
    from careloop.engine.audit_key import load_key

    return load_key(create=False)


# --- restore -------------------------------------------------------------------------------------

@dataclass(slots=True)
class Restored:
    manifest: dict[str, Any]
    rows: int
    uploads: int
    checkpoints: Path | None
    set_aside: Path | None


def _check_key(manifest: dict[str, Any]) -> None:
    from careloop.engine import audit
    from careloop.engine.audit_key import AuditKeyError

    reference = manifest["audit_key"]
    try:
        here = audit.key_id(_load_key())
    except AuditKeyError as exc:
        raise BackupError(f"{exc}; put the backup's audit key (it was at "
                          f"{reference['location']}) in place first") from None
    if reference.get("key_id") not in (None, here):
        raise BackupError(f"the audit key here (id {here}) is not the key of this backup (id "
                          f"{reference['key_id']}, kept at {reference['location']}): put that "
                          "key in place first, or the restored audit trail will not verify")


def restore(archive: Path, engine: Engine | None = None, *, force: bool = False,
            uploads: Path | None = None, checkpoints: Path | None = None,
            actor: str = "cli") -> Restored:
    """Restore ``archive`` into ``engine``'s database — only an empty one unless ``force`` —
    with its uploaded files and audit checkpoints (the checkpoint file found there is set
    aside, renamed, not deleted). Stop every Careloop process on that database first.

    Raises:
        BackupError: the archive is damaged, the target is not empty, the key is another.
    """
    from careloop.engine import audit
    from careloop.engine.db import transaction

    engine = engine or default_engine()
    uploads = uploads or uploads_dir()
    checkpoints = checkpoints if checkpoints is not None else audit.checkpoint_path()
    with opened(archive) as found:
        if found.problems:
            raise BackupError(f"{archive} is damaged: {found.problems[0]} (nothing restored)")
        manifest = found.manifest
        _check_key(manifest)
        tables = _target_tables(engine, manifest.get("schema"))
        if tables and not force:
            raise BackupError(f"the database {redact(engine.url.render_as_string(False))} "
                              f"already has {tables} table(s): restore only into an empty "
                              "database, or add --force to replace its contents")
        counts = _load(found, engine, clean=bool(tables))
        mismatch = _compare(manifest["tables"], counts)
        if mismatch:
            raise BackupError(f"the restored database differs from the backup: {mismatch[0]}")
        copied = 0
        for name in manifest["parts"]:
            if name.startswith(UPLOADS):
                uploads.mkdir(parents=True, exist_ok=True)
                target = uploads / Path(name).name
                if not target.exists():  # content-addressed: same name, same bytes
                    shutil.copyfile(found.folder / name, target)
                copied += 1
        set_aside = _restore_checkpoints(found.part(CHECKPOINTS), checkpoints)
    with transaction(engine) as session:
        audit.append(session, actor=actor, action="backup.restore", object_type="backup",
                     object_id=archive.name, details={"created_at": manifest["created_at"]})
    return Restored(manifest, sum(counts.values()), copied, checkpoints, set_aside)


def _restore_checkpoints(source: Path | None, target: Path | None) -> Path | None:
    """Put the backup's checkpoints in place; a different file already there is renamed to
    ``<name>.before-restore-<time>`` (it describes rows the restored database may not have)."""
    if target is None:
        return None
    set_aside = None
    if target.exists() and (source is None or _sha256(source) != _sha256(target)):
        stamp = datetime.fromisoformat(_local_now()).strftime("%Y%m%d-%H%M%S")
        set_aside = target.with_name(f"{target.name}.before-restore-{stamp}")
        target.rename(set_aside)
    if source is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return set_aside


def prune(folder: Path, keep: int, pattern: str = "careloop-*.tar.gz") -> list[Path]:
    """Delete all but the ``keep`` newest archives matching ``pattern`` in ``folder``."""
    archives = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    gone = archives[keep:] if keep > 0 else []
    for path in gone:
        path.unlink()
    return gone
