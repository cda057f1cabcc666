"""Liveness, readiness, metrics, database timeouts and quiet client disconnects (issue 20)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from careloop.engine import ticker
from careloop.engine.clock import now_utc
from careloop.engine.db import Timeouts, make_engine, transaction
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.web import bodyguard
from careloop.web.app import create_app
from careloop.web.health import heartbeat
from careloop.web.models import TickerHeartbeat


@pytest.fixture
def client(engine: Engine) -> TestClient:
    return TestClient(create_app())


def test_readyz_says_what_is_wrong_and_recovers(client: TestClient,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_READY_MAX_BACKLOG", "2")
    answer = client.get("/readyz")
    assert answer.status_code == 503  # no ticker has ever beaten
    assert answer.json()["checks"]["ticker"] == {"ok": False, "last_beat_seconds_ago": None,
                                                 "limit_seconds": 180.0}
    ticker.tick()  # the web.heartbeat tick writes this process's row
    assert client.get("/readyz").json() == {"status": "ready", "checks": {
        "database": {"ok": True},
        "ticker": {"ok": True, "last_beat_seconds_ago": pytest.approx(0, abs=5),
                   "limit_seconds": 180.0},
        "outbox": {"ok": True, "due": 0, "limit": 2},
        "dead_letters": {"ok": True, "failed": 0, "limit": 100}}}
    with transaction() as session:
        for n, status in enumerate(("pending", "pending", "pending", "failed")):
            session.add(OutboxMessage(idempotency_key=f"m{n}", template_key="t", channel="sms",
                                      locale="zh-CN", body="x", status=status,
                                      next_attempt_at=now_utc() - timedelta(minutes=1)))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["outbox"] == {"ok": False, "due": 3, "limit": 2}
    assert answer.json()["checks"]["dead_letters"]["failed"] == 1
    # a ticker silent for longer than the limit: unready again
    with transaction() as session:
        for row in session.query(TickerHeartbeat):
            row.beat_at = now_utc() - timedelta(minutes=10)
    monkeypatch.setenv("CARELOOP_READY_MAX_BACKLOG", "1000")
    checks = client.get("/readyz").json()["checks"]
    assert checks["ticker"]["ok"] is False and checks["ticker"]["last_beat_seconds_ago"] >= 600


def test_heartbeat_rows_of_gone_processes_are_removed(engine: Engine) -> None:
    with transaction() as session:
        session.add(TickerHeartbeat(process="old-host:1", beat_at=now_utc() - timedelta(days=2)))
    heartbeat()
    with transaction() as session:
        assert [r.process for r in session.query(TickerHeartbeat)] != ["old-host:1"]
        assert session.get(TickerHeartbeat, "old-host:1") is None


def test_metrics_need_the_metrics_scope_or_loopback_by_config(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with transaction() as session:
        reader = create_api_key(session, "prometheus", scopes=["metrics:read"])
        his = create_api_key(session, "his")
        session.add(OutboxMessage(idempotency_key="m", template_key="t", channel="sms",
                                  locale="zh-CN", body="x", status="failed",
                                  next_attempt_at=now_utc()))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": his}).status_code == 403
    assert client.post("/api/v1/events", json={"type": "x"},
                       headers={"X-API-Key": his}).status_code == 422
    client.get("/f/secret-link-token")
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert answer.status_code == 200
    body = answer.text
    assert 'careloop_outbox_messages{status="failed"} 1.0' in body
    assert "careloop_timers_due 0.0" in body and "careloop_timers_late 0.0" in body
    assert 'careloop_events_received_total{status="422"}' in body
    assert 'route="/api/v1/events"' in body
    assert 'route="/f/{token}"' in body and "secret-link-token" not in body  # templates only
    monkeypatch.setenv("CARELOOP_METRICS_LOOPBACK", "1")
    # the test client's address is not loopback: still refused without a key
    assert client.get("/metrics").status_code == 401
    local = TestClient(create_app(), client=("127.0.0.1", 50000))
    assert local.get("/metrics").status_code == 200


def test_every_connection_gets_the_configured_timeouts(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DB_STATEMENT_TIMEOUT", "7")
    monkeypatch.setenv("CARELOOP_DB_LOCK_TIMEOUT", "3")
    monkeypatch.setenv("CARELOOP_DB_BUSY_TIMEOUT", "2.5")
    assert Timeouts.from_env().postgres_options() == (
        "-c statement_timeout=7000 -c lock_timeout=3000 "
        "-c idle_in_transaction_session_timeout=60000 -c jit=off")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
        timed = make_engine(engine.url.render_as_string(hide_password=False),
                            connect_args={"options": f"-csearch_path={schema}"})
        with timed.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "7s"
            assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "3s"
            assert conn.execute(text("SHOW jit")).scalar_one() == "off"
            assert conn.execute(text("SHOW search_path")).scalar_one() == schema  # kept
    else:
        timed = make_engine(engine.url.render_as_string(hide_password=False))
        with timed.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 2500
    timed.dispose()
    monkeypatch.setenv("CARELOOP_DB_STATEMENT_TIMEOUT", "soon")
    with pytest.raises(ValueError) as exc:
        Timeouts.from_env()
    assert str(exc.value) == "CARELOOP_DB_STATEMENT_TIMEOUT has value 'soon': not a number of " \
                             "seconds"


def test_a_statement_cut_by_the_server_is_a_503_page(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", "0571-1234")

    def refuse(*_: object) -> None:
        raise OperationalError("SELECT", {}, Exception("canceling statement due to timeout"))

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        answer = TestClient(create_app()).get("/f/some-link")
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert "0571-1234" in answer.text and "canceling" not in answer.text


def test_a_client_that_leaves_is_one_log_line(engine: Engine, caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    # set, so the app's start-up warning about it is not a line of this test (run alone)
    monkeypatch.setenv("CARELOOP_BASE_URL", "https://followup.example-hospital.cn")
    app = create_app()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/f/some-link", "raw_path": b"/f/x",
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("testserver", 80), "client": ("10.0.0.1", 1),
             "headers": [(b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", b"10")]}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    lines = [r for r in caplog.records if r.name.startswith("careloop")]
    assert [r.getMessage().split(" (")[0] for r in lines] == ["client disconnected"]
    assert all(r.exc_info is None for r in caplog.records)


def test_the_body_check_names_the_path() -> None:
    problem = bodyguard.check(b'{"a": {"b": [1, {"c": "\\udfff"}]}}')
    assert problem is not None and problem.code == "request.lone-surrogate"
    assert problem.json_path == "$.a.b[1].c"
    problem = bodyguard.check(b'{"\\ud800x": 1}')
    assert problem is not None and problem.json_path == "$['\\\\ud800x']"
    assert bodyguard.check(b"not json") is None
    assert bodyguard.check(b'{"tags": ' + b"[1]" * 0 + b"[" + b"1," * 1000 + b"1]}",
                           items=1000) is not None
    assert bodyguard.check(b'{"ok": [1, 2]}') is None


def test_events_wait_their_turn_without_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from careloop.web.bulkhead import EventsBulkhead

    monkeypatch.setenv("CARELOOP_EVENTS_CONCURRENCY", "2")
    running: list[int] = [0]
    most: list[int] = [0]

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0)  # let the others try to enter
        await asyncio.sleep(0)
        running[0] -= 1

    guarded = EventsBulkhead(app)  # type: ignore[arg-type]

    async def load() -> None:
        scopes = [{"type": "http", "path": path} for path in
                  ["/api/v1/events"] * 8 + ["/f/x"] * 4]
        await asyncio.gather(*(guarded(s, None, None) for s in scopes))  # type: ignore[arg-type]

    asyncio.run(load())
    assert most[0] == 2 + 4  # two events at once; the pages never wait for them
