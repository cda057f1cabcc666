"""The restore drill of issue 20: a backup taken while the HIS keeps posting events holds every
event acknowledged before it started, restores into a fresh database (SQLite file or a new
PostgreSQL database) with its uploads and checkpoints, and the audit trail verifies there."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from careloop.engine import audit
from careloop.engine import backup as backups
from careloop.engine.db import make_engine, transaction
from careloop.engine.domain import Patient
from careloop.flows.ingest import create_api_key
from careloop.web.app import create_app


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CARELOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def target(db_engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database to restore into: a new SQLite file, or a new PostgreSQL
    database on the suite's server (dropped afterwards)."""
    if db_engine.dialect.name == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
        yield engine
        engine.dispose()
        return
    with db_engine.connect() as conn:
        schema = conn.scalar(text("SELECT current_schema()"))
    url = make_url(db_engine.url.render_as_string(False))
    name = f"{url.database}_restore_{secrets.token_hex(3)}"
    admin = make_engine(url.render_as_string(False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(url.set(database=name).render_as_string(False),
                         connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _patient(n: int) -> dict[str, object]:
    return {"event_id": f"drill-{n}", "type": "patient.upserted",
            "payload": {"patient_id": f"D{n}", "mrn": f"MRN-D{n}", "name": "张三",
                        "gender": "female", "birth_date": "1950-01-02"}}


class Poster(threading.Thread):
    """Posts patient events through the HTTP API until told to stop; keeps acknowledged ids."""

    def __init__(self, key: str) -> None:
        super().__init__(daemon=True)
        self.key = key
        self.acked: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        client = TestClient(create_app())
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                response = client.post("/api/v1/events", json=_patient(n),
                                       headers={"X-API-Key": self.key})
                assert response.status_code == 200, response.text
                with self.lock:
                    self.acked.append(f"D{n}")
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int) -> None:
        while len(self.acked) < count and self.error is None and self.is_alive():
            self.stop.wait(0.01)

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.acked)


def test_restore_drill_every_acknowledged_event_and_an_intact_audit_trail(
        engine: Engine, target: Engine, home: Path, tmp_path: Path) -> None:
    with transaction(engine) as session:
        key = create_api_key(session, "his")
    upload = b"%PDF-1.4 discharge letter"
    (home / "var" / "uploads").mkdir(parents=True)
    (home / "var" / "uploads" / hashlib.sha256(upload).hexdigest()).write_bytes(upload)
    poster = Poster(key)
    poster.start()
    try:
        poster.wait_for(5)
        with transaction(engine) as session:
            audit.checkpoint(session)  # the restored trail is checked against it
        poster.wait_for(10)
        acknowledged = poster.snapshot()  # acknowledged before the backup started
        archive = tmp_path / "backup.tar.gz"
        manifest = backups.create(archive, engine)
        poster.wait_for(len(acknowledged) + 3)  # writes went on during and after it
    finally:
        poster.stop.set()
        poster.join()
    assert poster.error is None, poster.error
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert manifest["tables"]["patients"] >= len(acknowledged) >= 10
    assert manifest["audit_key"]["included"] is False
    assert manifest["audit_key"]["location"] == os.environ["CARELOOP_AUDIT_KEY_FILE"]
    assert manifest["uploads"] == 1

    checked = backups.verify(archive, server=engine)
    assert checked.ok, checked.problems
    assert checked.restored_rows == manifest["rows"] and checked.audit_rows

    restored_uploads, checkpoints = tmp_path / "uploads", tmp_path / "checkpoints.jsonl"
    done = backups.restore(archive, target, uploads=restored_uploads, checkpoints=checkpoints)
    assert done.rows == manifest["rows"] and done.uploads == 1
    with transaction(target) as session:
        ids = set(session.scalars(select(Patient.id)).all())
        assert set(acknowledged) <= ids
        assert list(audit.verify(session, checkpoints=checkpoints)) == []
        actions = session.scalars(select(audit.AuditRow.action)).all()
    assert actions[-1] == "backup.restore" and "backup.create" in actions
    assert (restored_uploads / hashlib.sha256(upload).hexdigest()).read_bytes() == upload

    with pytest.raises(backups.BackupError) as refused:
        backups.restore(archive, target, uploads=restored_uploads, checkpoints=checkpoints)
    assert "already has" in str(refused.value) and "--force" in str(refused.value)
    with transaction(target) as session:  # a later checkpoint of the first restore
        audit.checkpoint(session, checkpoints)
    later = checkpoints.read_text("utf-8")
    again = backups.restore(archive, target, force=True, uploads=restored_uploads,
                            checkpoints=checkpoints)
    assert again.rows == manifest["rows"]
    assert again.set_aside is not None and again.set_aside.read_text("utf-8") == later
    with transaction(target) as session:
        assert list(audit.verify(session, checkpoints=checkpoints)) == []


def _rewrite(archive: Path, out: Path, change: str) -> None:
    with tarfile.open(archive) as source, tarfile.open(out, "w:gz") as copy:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == change:
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            copy.addfile(member, io.BytesIO(data))


def test_a_damaged_archive_fails_verify_and_is_not_restored(
        engine: Engine, target: Engine, home: Path, tmp_path: Path) -> None:
    with transaction(engine) as session:
        audit.append(session, actor="t", action="test.row")
    archive = tmp_path / "ok.tar.gz"
    manifest = backups.create(archive, engine)
    database = next(p for p in manifest["parts"] if p.startswith("database."))
    damaged = tmp_path / "damaged.tar.gz"
    _rewrite(archive, damaged, database)
    checked = backups.verify(damaged, server=engine)
    assert checked.problems == [f"{database}: sha256 differs from the manifest (damaged)"]
    with pytest.raises(backups.BackupError) as refused:
        backups.restore(damaged, target, uploads=tmp_path / "u", checkpoints=tmp_path / "c")
    assert "damaged" in str(refused.value)
    with target.connect() as conn:
        assert backups.count_rows(conn) == {} or target.dialect.name == "postgresql"
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(backups.BackupError) as unreadable:
        backups.verify(truncated)
    assert "truncated or damaged" in str(unreadable.value)
    manifest_only = json.loads(json.dumps(manifest))
    assert manifest_only["format"] == backups.FORMAT


def test_restore_refuses_another_audit_key(engine: Engine, target: Engine, home: Path,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "b.tar.gz"
    backups.create(archive, engine)
    monkeypatch.setenv("CARELOOP_AUDIT_KEY", "k" * 64)
    with pytest.raises(backups.BackupError) as refused:
        backups.restore(archive, target, uploads=tmp_path / "u", checkpoints=tmp_path / "c")
    assert "is not the key of this backup" in str(refused.value)
    with target.connect() as conn:
        assert backups.count_rows(conn) == {}


def test_the_commands(engine: Engine, target: Engine, home: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from careloop.engine.cli import main
    from careloop.engine.cli_backup import backup
    from careloop.engine.db import use_engine

    with transaction(engine) as session:
        audit.append(session, actor="t", action="test.row")
    folder = tmp_path / "backups"
    old = folder / "careloop-20000101-000000.tar.gz"
    folder.mkdir()
    old.write_bytes(b"")
    os.utime(old, (0, 0))
    made = CliRunner().invoke(backup, ["create", "--dir", str(folder), "--keep", "1",
                                       "--verify"])
    assert made.exit_code == 0, made.output
    (archive,) = folder.glob("careloop-*.tar.gz")
    assert "(hospital time)" in made.output and f"deleted {old}" in made.output
    assert "backup verified" in made.output
    assert f"it is at {os.environ['CARELOOP_AUDIT_KEY_FILE']}" in made.output

    checked = CliRunner().invoke(backup, ["verify", "--no-restore", str(archive)])
    assert checked.exit_code == 0, checked.output
    assert "match their sha256 (not restored)" in checked.output
    assert "audit trail intact" in made.output  # create --verify restored it

    monkeypatch.setattr("sys.argv", ["careloop", "backup", "restore", str(archive)])
    with pytest.raises(SystemExit) as stopped:
        main()  # into the suite's database, which is not empty
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and len(err.strip().splitlines()) == 1
    assert "already has" in err and "--force" in err

    monkeypatch.setenv("CARELOOP_AUDIT_CHECKPOINTS", str(tmp_path / "restored.jsonl"))
    with use_engine(target):
        restored = CliRunner().invoke(backup, ["restore", str(archive)])
    assert restored.exit_code == 0, restored.output
    assert restored.output.strip().splitlines()[-1].startswith("audit trail intact")
