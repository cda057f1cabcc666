"""Upgrades: idempotent, from every revision in the history, transactional per step (a
``careloop db upgrade`` killed mid-step leaves nothing of that step), and a database left
half-migrated by an older Careloop is refused with what to do."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, func, insert, inspect, select
from sqlalchemy.engine import make_url

from careloop.engine import audit
from careloop.engine import db as dbmod
from careloop.engine.db import transaction
from careloop.engine.migrate import (
    PAUSE_ENV,
    UpgradeRefused,
    current_revisions,
    head_revisions,
    is_current,
    script_directory,
    upgrade,
)
from careloop.engine.models import load_all_models

ROOT = Path(__file__).resolve().parents[2]
REVISIONS = sorted(r.revision for r in script_directory().walk_revisions())


def test_database_is_at_head_and_upgrade_is_idempotent(db_engine: Engine) -> None:
    assert is_current(db_engine)
    upgrade(db_engine)
    assert is_current(db_engine) and len(head_revisions(db_engine)) >= 1


def test_migrations_create_exactly_the_model_tables(db_engine: Engine) -> None:
    tables = set(inspect(db_engine).get_table_names()) - {"alembic_version"}
    assert tables == set(load_all_models().tables)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Engine]:
    """An empty database of the suite's kind: a SQLite file, or a new PostgreSQL schema."""
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url and make_url(url).get_backend_name() == "postgresql":
        engine, schema = dbmod.schema_engine(url, "careloop_mig")
        try:
            yield engine
        finally:
            engine.dispose()
            dbmod.drop_schema(url, schema)
    else:
        engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        engine.dispose()


def _rows_of_that_time(engine: Engine) -> None:
    """A patient and two audit rows, written with the tables as they are at this revision (the
    audit rows chained the way that revision did: unkeyed before the anchor, keyed after)."""
    meta = MetaData()
    names = set(inspect(engine).get_table_names())
    at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    with engine.begin() as conn:
        if "patients" in names:
            patients = Table("patients", meta, autoload_with=conn)
            conn.execute(insert(patients).values(
                id="P1", mrn="MRN1", name="张三", locale="zh-CN", attributes={}, consents={},
                created_at=at, updated_at=at))
    if "audit_anchor" in names:
        with transaction(engine) as session:
            for n in range(2):
                audit.append(session, actor="old", action=f"test.{n}")
        return
    log = Table("audit_log", meta, autoload_with=engine)
    prev = audit.GENESIS
    with engine.begin() as conn:
        for n in range(2):
            fields = {"at": at.isoformat(timespec="microseconds"), "actor": "old",
                      "actor_role": None, "ip": None, "action": f"test.{n}",
                      "object_type": None, "object_id": None, "patient_id": None,
                      "outcome": "success", "request_id": None, "details": {}}
            row_hash = audit._legacy_hash(prev, fields)
            conn.execute(insert(log).values(**{**fields, "at": at}, prev_hash=prev,
                                            hash=row_hash))
            prev = row_hash


@pytest.mark.parametrize("revision", REVISIONS)
def test_every_revision_upgrades_to_heads_with_its_rows(fresh: Engine, revision: str) -> None:
    upgrade(fresh, revision)
    assert revision in current_revisions(fresh) or revision not in head_revisions(fresh)
    had_patients = "patients" in inspect(fresh).get_table_names()
    _rows_of_that_time(fresh)
    upgrade(fresh)
    assert is_current(fresh)
    assert set(inspect(fresh).get_table_names()) - {"alembic_version"} == set(
        load_all_models().tables)
    with transaction(fresh) as session:
        assert list(audit.verify(session, use_checkpoints=False)) == []
        assert session.scalar(audit.row_count()) == 2
    with fresh.connect() as conn:
        patients = Table("patients", MetaData(), autoload_with=conn)
        assert conn.scalar(select(func.count()).select_from(patients)) == (
            1 if had_patients else 0)


def test_half_migrated_database_is_refused_with_what_to_do(fresh: Engine) -> None:
    upgrade(fresh, "0002")
    with fresh.begin() as conn:  # what an older Careloop killed inside 0005 left behind
        conn.exec_driver_sql("CREATE TABLE flow_runs (id INTEGER PRIMARY KEY)")
    with pytest.raises(UpgradeRefused) as refused:
        upgrade(fresh)
    message = str(refused.value)
    assert "half-migrated" in message and "flow_runs" in message
    assert "careloop backup restore --force" in message and "\n" not in message
    assert "0005" not in current_revisions(fresh)


def test_tables_without_a_revision_are_refused(fresh: Engine) -> None:
    with fresh.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE audit_log (id INTEGER PRIMARY KEY)")
    with pytest.raises(UpgradeRefused) as refused:
        upgrade(fresh)
    assert "no recorded revision" in str(refused.value)


def _careloop(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "careloop", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_line(proc: subprocess.Popen[str], wanted: str, limit: float = 60.0) -> str:
    """Read the process's stderr until a line holds ``wanted`` (or fail after ``limit``)."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen = []
    deadline = datetime.now().timestamp() + limit
    while datetime.now().timestamp() < deadline:
        if not sel.select(timeout=1):
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if wanted in line:
            return line
    proc.kill()
    raise AssertionError(f"{wanted!r} never came; stderr was: {''.join(seen)[-2000:]}")


def test_upgrade_killed_mid_step_on_sqlite_leaves_nothing_of_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    env = {**os.environ, "CARELOOP_DATABASE_URL": url, "CARELOOP_HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT / ".ci" / "typing")}
    proc = _careloop({**env, PAUSE_ENV: "0005"}, "db", "upgrade")
    _wait_for_line(proc, "paused in revision 0005")
    os.kill(proc.pid, signal.SIGKILL)  # kill -9, inside 0005's transaction
    proc.communicate()
    engine = dbmod.make_engine(url)
    try:
        assert "flow_runs" not in inspect(engine).get_table_names()  # 0005 left nothing
        assert "0005" not in current_revisions(engine)
        again = _careloop(env, "db", "upgrade")
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert "at revision" in out
        assert is_current(engine)
    finally:
        engine.dispose()


def test_upgrade_with_backup_dir_backs_up_the_old_schema_first(fresh: Engine,
                                                               tmp_path: Path) -> None:
    from click.testing import CliRunner

    from careloop.engine import backup
    from careloop.engine.cli import cli

    upgrade(fresh, "0012")
    _rows_of_that_time(fresh)
    with dbmod.use_engine(fresh):
        done = CliRunner().invoke(cli, ["db", "upgrade", "--backup-dir", str(tmp_path / "b")])
        assert done.exit_code == 0, done.output
        (archive,) = (tmp_path / "b").glob("careloop-before-upgrade-*.tar.gz")
        assert f"backup before the upgrade: {archive}" in done.output
        assert is_current(fresh)
        checked = backup.verify(archive, restore_check=False)  # the drill restores
        again = CliRunner().invoke(cli, ["db", "upgrade", "--backup-dir", str(tmp_path / "b")])
    assert checked.ok, checked.problems
    assert checked.manifest["revisions"] == ["0012"]
    assert checked.manifest["tables"]["patients"] == 1
    assert again.exit_code == 0 and "backup before" not in again.output  # nothing to upgrade

