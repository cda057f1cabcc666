"""The HIS view poller against the MariaDB on this machine (the "HIS"; Careloop's own database is
the suite's SQLite or PostgreSQL): rows inserted into a discharge view become discharges exactly
once with two pollers (two OS processes, each with its own engine, polling while the HIS inserts
rows), a poller that lost its lease commits nothing, the watermark survives a restart, and the
source's faults (unreachable, a column missing, no address) are recorded and shown on
/admin/integration, never raised.

MariaDB at ``CARELOOP_TEST_MARIADB_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/``) must
be reachable: like PostgreSQL in CI, an unreachable one fails the test, never skips it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from careloop.engine.bundles import import_bundle
from careloop.engine.db import make_engine, transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import DomainEventRow
from careloop.flows.inbound import views
from careloop.flows.inbound.models import HisViewState
from careloop.web import admin
from careloop.web.app import create_app

MARIADB = os.environ.get("CARELOOP_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
URL_ENV = "CARELOOP_TEST_HIS_URL"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
VIEW = """kind: his_view
key: his_discharges
title: {zh-CN: HIS 出院视图, en: HIS discharges}
url_env: CARELOOP_TEST_HIS_URL
query: |
  SELECT seq, visit_no, patient_no, dept_code, discharged_at
  FROM v_discharges WHERE seq > :watermark ORDER BY seq LIMIT :batch_size
watermark: {column: seq, start: 0}
batch_size: %(batch)d
interval_seconds: 60
event:
  type: encounter.discharged
  event_id: "his-discharge-{visit_no}"
  occurred_at: discharged_at
  payload:
    encounter_id: visit_no
    patient_id: patient_no
    type: {value: inpatient}
    department_id: %(dept)s
    discharged_at: discharged_at
"""


@pytest.fixture
def his() -> Iterator[Engine]:
    """A fresh MariaDB database with the HIS's discharge table (dropped afterwards)."""
    server = create_engine(MARIADB, poolclass=NullPool)
    name = f"careloop_his_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    except Exception as exc:  # the HIS stand-in is required, like PostgreSQL in CI
        pytest.fail(f"MariaDB at {make_url(MARIADB).render_as_string()} is not reachable "
                    f"({type(exc).__name__}); the view poller test needs it")
    url = make_url(MARIADB).set(database=name, query={"charset": "utf8mb4"})
    source = create_engine(url, poolclass=NullPool)
    with source.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE v_discharges (seq BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "visit_no VARCHAR(32) NOT NULL UNIQUE, patient_no VARCHAR(32) NOT NULL, "
            "dept_code VARCHAR(32) NOT NULL, discharged_at DATETIME NOT NULL)")
    os.environ[URL_ENV] = url.render_as_string(hide_password=False)
    try:
        yield source
    finally:
        os.environ.pop(URL_ENV, None)
        source.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}")
        server.dispose()


def _definition(tmp_path: Path, engine: Engine, *, batch: int = 25,
                dept: str = "dept_code") -> views.HisViewSpec:
    app = tmp_path / "hisapp"
    (app / "his_views").mkdir(parents=True, exist_ok=True)
    (app / "app.yaml").write_text(
        "id: hisapp\nname: {zh-CN: HIS 接口, en: HIS interface}\nversion: 0.1.0\nformat: 1\n"
        "default_locale: zh-CN\n", "utf-8")
    (app / "his_views" / "his_discharges.yaml").write_text(
        VIEW % {"batch": batch, "dept": dept}, "utf-8")
    import_bundle(app, engine=engine)
    with transaction(engine) as session:
        return views.spec_of(session, "his_discharges")


def _reference_data(engine: Engine, patients: int) -> None:
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
        for n in range(patients):
            session.add(Patient(id=f"P{n}", mrn=f"M{n}", name=f"患者{n}", attributes={},
                                consents={}))


def _insert(source: Engine, first: int, count: int, patients: int) -> None:
    with source.begin() as conn:
        conn.execute(text("INSERT INTO v_discharges (visit_no, patient_no, dept_code, "
                          "discharged_at) VALUES (:v, :p, 'cardiology', :at)"),
                     [{"v": f"V{n}", "p": f"P{n % patients}",
                       "at": datetime(2026, 11, 30, 9, 0) + timedelta(minutes=n)}
                      for n in range(first, first + count)])


def _second_engine(engine: Engine) -> Engine:
    """Another engine on the suite's database, as another process would have."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "postgresql":
        return make_engine(url)
    with engine.connect() as conn:
        schema = str(conn.execute(text("SHOW search_path")).scalar())
    return make_engine(url, connect_args={"options": f"-csearch_path={schema}"})


def _spec(engine: Engine) -> views.HisViewSpec:
    with transaction(engine) as session:
        return views.spec_of(session, "his_discharges")


def _discharges(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.scalars(select(DomainEventRow.event_id).where(
            DomainEventRow.type == "encounter.discharged")).all())


def _schema(engine: Engine) -> str:
    if engine.dialect.name != "postgresql":
        return ""
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW search_path")).scalar())


def test_two_poller_processes_turn_rows_inserted_meanwhile_into_discharges_once(
        engine: Engine, his: Engine, tmp_path: Path) -> None:
    """Two OS processes poll the MariaDB view concurrently against the suite's database (the
    SQLite file, or the PostgreSQL schema) while the HIS inserts rows: each row becomes one
    discharge event and one discharged encounter."""
    _definition(tmp_path, engine)
    _reference_data(engine, patients=10)
    stop = tmp_path / "stop"
    url = engine.url.render_as_string(hide_password=False)
    pollers = [subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("his_view_poller.py")), url,
         _schema(engine), "his_discharges", str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs: list[tuple[int, str, str]] = []
    try:
        _until_polling(stop, pollers)
        inserted = 0
        for count in (40, 1, 73, 26, 60):  # batches of 25: full ones, short ones
            _insert(his, inserted, count, patients=10)
            inserted += count
            time.sleep(0.3)
        stop.touch()
        for process in pollers:
            out, err = process.communicate(timeout=180)
            outputs.append((process.returncode, out, err))
    finally:
        for process in pollers:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    results = [[json.loads(line) for line in out.splitlines()] for _, out, _ in outputs]
    # both processes polled (each claimed the view at least once); none failed
    assert all(any(r["status"] == "polled" for r in mine) for mine in results)
    assert {r["status"] for mine in results for r in mine} <= {"polled", "busy"}
    assert not [r for mine in results for r in mine if r["error"]]
    settle = views.poll(engine, _spec(engine), force=True)
    assert settle.accepted == 0  # the pollers' last rounds, after the stop, read everything
    assert sum(r["accepted"] for mine in results for r in mine) == inserted == 200
    ids = _discharges(engine)
    assert len(ids) == len(set(ids)) == 200
    assert set(ids) == {f"his-discharge-V{n}" for n in range(inserted)}
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(Encounter).where(
            Encounter.status == "discharged")) == 200
        encounter = session.get(Encounter, "V3")
        assert encounter is not None and encounter.discharged_at is not None
        # a naive HIS date-time is hospital time (Asia/Shanghai): 09:03 there is 01:03 UTC
        assert encounter.discharged_at.astimezone(UTC) == datetime(2026, 11, 30, 1, 3,
                                                                   tzinfo=UTC)
        state = session.get(HisViewState, "his_discharges")
        assert state is not None and views.decode_watermark(state.watermark or "") == 200
        assert state.rows_seen == state.events_accepted == 200
        assert state.lease_owner is None and state.last_error is None


def _until_polling(stop: Path, pollers: list[subprocess.Popen[str]]) -> None:
    """Wait until both processes have polled once (they are running), at most 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for process in pollers:
            if process.poll() is not None:
                raise AssertionError(process.communicate()[1][-3000:])
        if len(list(stop.parent.glob(f"{stop.name}.ready-*"))) == len(pollers):
            return
        time.sleep(0.2)
    raise AssertionError("the poller processes did not start within 120 s")


def test_a_poller_that_lost_its_lease_commits_nothing_and_restart_goes_on(
        engine: Engine, his: Engine, tmp_path: Path) -> None:
    spec = _definition(tmp_path, engine, batch=100)
    _reference_data(engine, patients=5)
    _insert(his, 0, 30, patients=5)
    other = _second_engine(engine)
    later: list[views.PollResult] = []

    def meanwhile() -> None:  # A stalls past its lease; B takes the view over and reads it all
        if not later:
            later.append(views.poll(other, spec, now=T0 + timedelta(
                seconds=views.LEASE_SECONDS + 1), worker="B"))

    try:
        first = views.poll(engine, spec, now=T0, worker="A", after_fetch=meanwhile)
    finally:
        other.dispose()
    assert first.status == "lease_lost" and first.accepted == 0
    assert later[0].status == "polled" and later[0].accepted == 30
    assert sorted(_discharges(engine)) == sorted(f"his-discharge-V{n}" for n in range(30))

    # not due again before its interval; the next poll after a restart reads only new rows
    assert views.poll(engine, spec, now=T0 + timedelta(seconds=330)).status == "not_due"
    restarted = _second_engine(engine)
    try:
        _insert(his, 30, 3, patients=5)
        again = views.poll(restarted, spec, now=T0 + timedelta(seconds=500))
    finally:
        restarted.dispose()
    assert (again.status, again.rows, again.accepted) == ("polled", 3, 3)
    assert len(_discharges(engine)) == 33


def test_the_hospital_changes_a_row_it_becomes_a_correction(
        engine: Engine, his: Engine, tmp_path: Path) -> None:
    spec = _definition(tmp_path, engine)
    _reference_data(engine, patients=2)
    _insert(his, 0, 2, patients=2)
    assert views.poll(engine, spec, now=T0, force=True).accepted == 2
    with his.begin() as conn:  # the HIS corrects the time: the row is read again (new seq)
        conn.exec_driver_sql("DELETE FROM v_discharges WHERE visit_no = 'V1'")
        conn.exec_driver_sql("INSERT INTO v_discharges (visit_no, patient_no, dept_code, "
                             "discharged_at) VALUES ('V1', 'P1', 'cardiology', "
                             "'2026-11-30 15:30:00')")
    again = views.poll(engine, spec, now=T0, force=True)
    assert (again.status, again.accepted) == ("polled", 1)
    with transaction(engine) as session:
        corrected = session.scalars(select(DomainEventRow).where(
            DomainEventRow.type == "his.corrected")).all()
        assert [c.payload["corrects"] for c in corrected] == ["his-discharge-V1"]
        encounter = session.get(Encounter, "V1")
        assert encounter is not None and encounter.discharged_at is not None
        assert encounter.discharged_at.astimezone(UTC) == datetime(2026, 11, 30, 7, 30,
                                                                   tzinfo=UTC)


def test_source_faults_are_recorded_and_shown_never_raised(
        engine: Engine, his: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _definition(tmp_path, engine, dept="ward_code")  # the view has no ward_code column
    _reference_data(engine, patients=2)
    _insert(his, 0, 2, patients=2)
    bad_column = views.poll(engine, spec, now=T0, force=True)
    assert bad_column.status == "error" and bad_column.error is not None
    assert "'ward_code'" in bad_column.error and "dept_code" in bad_column.error

    monkeypatch.setenv(URL_ENV, "mysql+pymysql://careloop:s3cret-pw@127.0.0.1:1/nowhere")
    unreachable = views.poll(engine, spec, now=T0, force=True)
    assert unreachable.status == "error" and unreachable.error is not None
    assert "could not be reached" in unreachable.error and "s3cret-pw" not in unreachable.error

    monkeypatch.delenv(URL_ENV)
    unset = views.poll(engine, spec, now=T0, force=True)
    assert unset.error is not None and URL_ENV in unset.error
    assert views.poll_due(engine, now=T0 + timedelta(hours=1)) == {"his_discharges": "error"}
    assert _discharges(engine) == []  # nothing ingested, the watermark did not move
    with transaction(engine) as session:
        state = session.get(HisViewState, "his_discharges")
        assert state is not None and state.watermark is None and state.lease_owner is None

    with transaction(engine) as session:
        user = admin.create_user(session, username="it", display_name="IT",
                                 password="Correct-Horse-Battery-9")
        admin.grant(session, user, "system_admin", None)
    client = TestClient(create_app())
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    client.post("/login", data={"username": "it", "password": "Correct-Horse-Battery-9",
                                "csrf_token": token.group(1), "next": "/"})
    shown = client.get("/admin/integration", headers={"Accept-Language": "zh-CN"})
    assert shown.status_code == 200
    section = shown.text[shown.text.index('id="his-views"'):]
    assert "HIS 出院视图" in section and "每 60 秒" in section
    assert f"本进程未设置环境变量 {URL_ENV}（HIS 数据库地址）" in section
    assert "null" not in section and "None" not in section


def test_invalid_definitions_are_refused_at_their_place(tmp_path: Path) -> None:
    from careloop.engine.validate import validate_paths

    folder = tmp_path / "his_views"
    folder.mkdir()
    bad = (VIEW % {"batch": 10, "dept": "dept_code"}).replace(
        "SELECT seq", "DELETE FROM v_discharges; SELECT seq").replace(
        "event_id: \"his-discharge-{visit_no}\"", "event_id: \"his-discharge\"").replace(
        "    discharged_at: discharged_at\n", "    discharge_time: discharged_at\n")
    (folder / "bad.yaml").write_text(bad, "utf-8")
    report = validate_paths([folder / "bad.yaml"])
    found = {(p.code, p.line) for p in report.problems}
    assert ("his_view.not-read-only", 5) in found
    assert ("his_view.bad-event-id", 13) in found
    assert ("his_view.unknown-field", 20) in found
    assert ("his_view.missing-field", 16) in found


def test_cli_polls_one_view_now_and_lists_the_state(
        engine: Engine, his: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from careloop.flows.inbound.cli import his_views

    _definition(tmp_path, engine)
    _reference_data(engine, patients=3)
    _insert(his, 0, 3, patients=3)
    runner = CliRunner()
    done = runner.invoke(his_views, ["poll", "his_discharges"])
    assert done.exit_code == 0, done.output
    assert '"status": "polled", "rows": 3, "accepted": 3' in done.output
    assert runner.invoke(his_views, ["poll", "nope"]).exit_code == 1
    monkeypatch.delenv(URL_ENV)
    failed = runner.invoke(his_views, ["poll", "his_discharges"])
    assert failed.exit_code == 1 and f"{URL_ENV}" in failed.output
    listed = runner.invoke(his_views, ["list"])
    assert listed.exit_code == 0
    assert listed.output.startswith("his_discharges\t") and "\t3\t" in listed.output
    assert f"the environment variable {URL_ENV}" in listed.output


def test_a_refused_row_stops_the_batch_before_it_and_is_retried_once_fixed(
        engine: Engine, his: Engine, tmp_path: Path) -> None:
    spec = _definition(tmp_path, engine)
    _reference_data(engine, patients=4)
    _insert(his, 0, 4, patients=4)
    with his.begin() as conn:  # V2 names a department IT has not set up yet
        conn.exec_driver_sql("UPDATE v_discharges SET dept_code = 'geriatrics' "
                             "WHERE visit_no = 'V2'")
    first = views.poll(engine, spec, now=T0, force=True)
    assert (first.status, first.accepted) == ("error", 2)
    assert first.error is not None and first.error.startswith("event his-discharge-V2 refused")
    assert "geriatrics" not in first.error  # values quoted by the refusal are masked
    with transaction(engine) as session:
        state = session.get(HisViewState, "his_discharges")
        assert state is not None and views.decode_watermark(state.watermark or "") == 2
        session.add(Department(id="geriatrics", name={"zh-CN": "老年科", "en": "Geriatrics"}))
    second = views.poll(engine, spec, now=T0, force=True)
    assert (second.status, second.accepted) == ("polled", 2)
    assert sorted(_discharges(engine)) == [f"his-discharge-V{n}" for n in range(4)]
