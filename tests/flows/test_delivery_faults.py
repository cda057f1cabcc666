"""Delivery under faults (issue 20): a channel down then back, a dispatcher killed between the
provider's acceptance and the commit, two dispatchers at once, a gateway that hangs. Loopback
servers only; long durations are the engine clock's (each pass gets its logical ``now``), never
sleep. Runs on the session's database (SQLite file or the PostgreSQL test schema)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from sqlalchemy import Engine, select, text, update

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, Task
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.flows import outbox
from careloop.flows.channel import Channel, Outbound, SendResult, Timeouts
from careloop.flows.cli_outbox import outbox as outbox_cli
from careloop.flows.models import DeliveryIncident, FlowTimer, OutboxMessage, RunHistory
from careloop.flows.runtime import start
from careloop.flows.scheduler import run_due
from careloop.rules.models import RuleAlert

from .conftest import APPS  # type: ignore[import-not-found]

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: no quiet hours
DISPATCHER = """
import json, sys
from datetime import datetime
from careloop.engine.db import make_engine
from careloop.flows.outbox import dispatch_due
url, schema, now, worker, batch = sys.argv[1:6]
kwargs = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
engine = make_engine(url, **kwargs)
from careloop.engine.registry import loaded_registry
loaded_registry()
print("ready", flush=True)
sys.stdin.readline()  # started ahead (imports take seconds on a busy machine); go on a line
print(json.dumps(dispatch_due(engine, worker=worker, now=datetime.fromisoformat(now),
                              batch=int(batch))))
"""


# --- loopback providers -----------------------------------------------------------------------


class Gateway:
    """An HTTP SMS gateway: answers 503 while down; counts each POST it accepted, by the
    ``Idempotency-Key`` header (it does not drop repeats, so a duplicate shows)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.up, self.delay = True, delay
        self.accepted: Counter[str] = Counter()
        self.refused = 0
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                if not gateway.up:
                    with gateway.lock:
                        gateway.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                if gateway.delay:
                    time.sleep(gateway.delay)  # a slow gateway (fractions of a second)
                with gateway.lock:
                    gateway.accepted[key] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    served = Gateway()
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "webhook")
    monkeypatch.setenv("CARELOOP_CHANNEL_WECHAT", "webhook")
    monkeypatch.setenv("CARELOOP_GATEWAY_URL", served.url)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def common(engine: Engine) -> Engine:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        for n in range(40):
            session.add(Patient(id=f"P{n}", mrn=f"M{n}", name="张三", phone="13800000000",
                                locale="zh-CN", attributes={"email": f"p{n}@example.org"},
                                consents={}))
    return engine


def _enqueue(engine: Engine, key: str, patient: str, *, channel: str = "sms",
             valid_for: timedelta | None = None, at: datetime = T0) -> int:
    with frozen_now(at), transaction(engine) as session:
        return outbox.enqueue(session, template_key="diet_advice", channel=channel,
                              patient_id=patient, values={"patient_name": "张三"},
                              idempotency_key=key, valid_for=valid_for)


def _rows(engine: Engine) -> list[OutboxMessage]:
    with transaction(engine) as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all())


def _events(engine: Engine, type: str) -> list[DomainEventRow]:
    with transaction(engine) as session:
        return list(session.scalars(select(DomainEventRow).where(
            DomainEventRow.type == type)).all())


# --- a channel down, then back ----------------------------------------------------------------


def test_channel_down_30_minutes_then_back(common: Engine, gateway: Gateway) -> None:
    """15 messages valid a day and 5 valid 20 minutes; the gateway refuses for the first 30
    minutes. The 15 arrive exactly once when it is back; the 5 are dead letters (too late)
    counted into one delivery incident."""
    lasting = [_enqueue(common, f"long-{n}", f"P{n}") for n in range(15)]
    short = [_enqueue(common, f"short-{n}", f"P{20 + n}", valid_for=timedelta(minutes=20))
             for n in range(5)]
    gateway.up = False
    for minute in range(0, 91, 2):  # a sweep every 2 minutes
        gateway.up = minute > 30
        outbox.dispatch_due(common, worker="w", now=T0 + timedelta(minutes=minute),
                            rng=random.Random(minute))
    rows = {r.id: r for r in _rows(common)}
    assert gateway.refused > 20  # it was tried (and retried) while down
    assert gateway.accepted == Counter({f"long-{n}": 1 for n in range(15)})
    # each was held up by the outage (tried, or deferred while the channel failed in a row)
    assert all(rows[i].status == "sent" and rows[i].first_failed_at is not None
               for i in lasting)
    assert [(rows[i].status, rows[i].reason) for i in short] == [("dead", "too_late")] * 5
    with transaction(common) as session:
        (incident,) = session.scalars(select(DeliveryIncident)).all()
        assert (incident.channel, incident.status, incident.dead_count) == ("sms", "open", 5)
        # the channel recovered, but these five are past their moment: nothing to offer
        assert outbox.recovered_dead(session, T0 + timedelta(minutes=91)) == []
    assert len(_events(common, "outbox.dead_letter")) == 5
    assert len(_events(common, "delivery.incident_opened")) == 1
    # the common bundle's rule set alerts the people responsible, in words (no channel code)
    with transaction(common) as session:
        (alert,) = session.scalars(select(RuleAlert)).all()
    assert (alert.ruleset_key, alert.level, alert.status) == ("delivery_alerts", "critical",
                                                              "open")
    assert alert.message.startswith("短信渠道故障") and "sms" not in alert.message


def test_past_the_horizon_dead_letters_are_offered_when_the_channel_recovers(
        common: Engine, gateway: Gateway) -> None:
    """Down for 7 hours (the webhook channel's horizon is 6): dead letters; once a later message
    goes through, ``careloop outbox retry --dead`` sends them, each once."""
    ids = [_enqueue(common, f"h-{n}", f"P{n}") for n in range(4)]
    gateway.up = False
    for step in range(0, 22):  # every 20 minutes for 7 hours
        outbox.dispatch_due(common, worker="w", now=T0 + timedelta(minutes=20 * step),
                            rng=random.Random(step))
    assert {(r.status, r.reason) for r in _rows(common)} == {("dead", "retry_horizon")}
    back = T0 + timedelta(hours=7, minutes=30)
    with transaction(common) as session:
        assert outbox.recovered_dead(session, back) == []  # nothing has gone through yet
    gateway.up = True
    _enqueue(common, "fresh", "P30", at=back)
    outbox.dispatch_due(common, worker="w", now=back)
    with transaction(common) as session:
        assert sorted(r.id for r in outbox.recovered_dead(session, back)) == ids
    with frozen_now(back + timedelta(minutes=1)):
        result = CliRunner().invoke(outbox_cli, ["retry", "--dead"])
    assert result.exit_code == 0, result.output
    assert "4 dead letter(s) will be sent again" in result.output
    outbox.dispatch_due(common, worker="w", now=back + timedelta(minutes=2))
    assert gateway.accepted == Counter({**{f"h-{n}": 1 for n in range(4)}, "fresh": 1})
    assert {r.status for r in _rows(common)} == {"sent"}


# --- a flow learns that its link did not arrive -----------------------------------------------


DISCHARGE = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
             "department_id": "cardiology", "responsible_nurse": "nurse_li",
             "discharged_at": "2026-12-01T10:00:00+08:00", "procedures": []}


def test_undelivered_day3_link_becomes_the_nurses_phone_task(
        bundles: Engine, send: Any, sweep: Any, nurse: int, helpers: Any,
        gateway: Gateway) -> None:
    helpers.patient(send, birth="1980-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-01T10:06:00+08:00")  # settlement and guidance go out
    gateway.up = False
    at = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
    for step in range(0, 15):  # 7 hours of a dead gateway, a sweep every 30 minutes
        sweep((at + timedelta(minutes=30 * step)).isoformat())
    day3 = next(m for m in helpers.messages(bundles) if m.template_key == "discharge_care_day3")
    assert (day3.status, day3.reason) == ("dead", "retry_horizon")
    (task,) = helpers.tasks(bundles)
    assert (task.kind, task.priority, task.assignee_user_id) == ("phone_followup", "high", nurse)
    assert task.details["undelivered_message_id"] == day3.id
    with transaction(bundles) as session:
        actions = session.scalars(select(RunHistory.action).where(
            RunHistory.step_key == "day3_form")).all()
    assert "message_undelivered" in actions and "undelivered_fallback" in actions


# --- a crash between the provider's acceptance and the commit ---------------------------------


class StallingSink:
    """An SMTP server that records each message whose DATA it fully received (its
    ``Message-ID``), then, for the message numbers in ``stall_at``, holds its 250 reply until
    released: the window in which the test kills the dispatcher."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.stall_at: set[int] = set()
        self.stalled = threading.Event()
        self.released = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(str(message_from_bytes(envelope.content)["Message-ID"]))
        if len(self.received) in self.stall_at:
            self.stalled.set()
            while not self.released:
                await asyncio.sleep(0.02)
        return "250 OK"


def _where(engine: Engine) -> tuple[str, str]:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "postgresql":
        return url, ""
    with engine.connect() as conn:
        return url, str(conn.execute(text("SHOW search_path")).scalar())


def _dispatcher(engine: Engine, now: datetime, worker: str, batch: int,
                env: dict[str, str]) -> subprocess.Popen[str]:
    """A dispatcher process, imported and waiting: :func:`_go` starts its pass."""
    url, schema = _where(engine)
    return subprocess.Popen([sys.executable, "-c", DISPATCHER, url, schema, now.isoformat(),
                             worker, str(batch)], env={**os.environ, **env},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_dispatcher_killed_six_times_against_a_slow_smtp_server(common: Engine) -> None:
    """30 e-mails; six times a dispatcher is killed (SIGKILL) while the server, having received
    the whole message, holds its reply. Counted: the Message-IDs the server received. Each of the
    30 is received exactly once; the six interrupted ones are ``unknown`` (plain SMTP can be
    neither asked nor given a key: never resent blind), the rest ``sent``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = StallingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = {"CARELOOP_CHANNEL_EMAIL": "smtp", "CARELOOP_SMTP_PORT": str(port)}
    ids = [_enqueue(common, f"mail-{n}", f"P{n}", channel="email") for n in range(30)]
    # each restart 3 minutes later: the killed one's claims (2 minutes) have lapsed
    victims = [_dispatcher(common, T0 + timedelta(minutes=3 * kill), f"v{kill}", 5, env)
               for kill in range(6)]
    survivor = _dispatcher(common, T0 + timedelta(minutes=21), "survivor", 50, env)
    try:
        for victim in victims:
            _ready(victim)
            sink.stall_at = {len(sink.received) + 3}
            sink.stalled.clear()
            _go(victim)
            assert sink.stalled.wait(60), "the dispatcher never reached the stalled reply"
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=30)
            assert victim.returncode == -signal.SIGKILL
        sink.released = True
        _ready(survivor)
        _go(survivor)
        survivor.communicate(timeout=120)
        assert survivor.returncode == 0
    finally:
        sink.released = True
        controller.stop()
    received = Counter(sink.received)
    assert len(received) == 30 and set(received.values()) == {1}
    rows = _rows(common)
    assert received.keys() == {f"<mail-{n}@careloop>" for n in range(30)}
    assert Counter(r.status for r in rows) == Counter({"sent": 24, "unknown": 6})
    assert {r.reason for r in rows if r.status == "unknown"} == {"outcome_unknown"}
    # a person checked the mail server's log: confirmed, never sent again
    unknown = [r.id for r in rows if r.status == "unknown"]
    with transaction(common) as session:
        for message_id in unknown:
            outbox.confirm_delivered(session, message_id)
    assert {r.status for r in _rows(common)} == {"sent"} and len(ids) == 30


# --- two dispatchers at once --------------------------------------------------------------------


def test_two_dispatcher_processes_never_send_one_message_twice(common: Engine,
                                                               gateway: Gateway) -> None:
    gateway.delay = 0.02  # a slow gateway: both processes are mid-send most of the time
    for n in range(40):
        _enqueue(common, f"two-{n}", f"P{n}")
    env = {"CARELOOP_CHANNEL_SMS": "webhook", "CARELOOP_GATEWAY_URL": gateway.url}
    now = T0 + timedelta(minutes=1)
    procs = [_dispatcher(common, now, f"d{n}", 3, env) for n in range(2)]
    for proc in procs:
        _ready(proc)
    for proc in procs:  # both at once
        _go(proc)
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.get("sent", 0) for o in outputs) == 40
    assert gateway.accepted == Counter({f"two-{n}": 1 for n in range(40)})
    assert {r.status for r in _rows(common)} == {"sent"}


# --- a gateway that hangs, a crash with a provider that can be asked ---------------------------


class Hanging(Channel):
    """A provider that never answers (until the test ends)."""

    name = "hanging"
    title: ClassVar[dict[str, str]] = {"zh-CN": "挂起", "en": "Hanging"}
    timeouts = Timeouts(connect=0.05, read=0.05, margin=0.05)
    release = threading.Event()

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        self.release.wait(30)
        return SendResult("delivered")


class Askable(Channel):
    """A provider that can be asked what became of a key (and counts its sends)."""

    name = "askable"
    title: ClassVar[dict[str, str]] = {"zh-CN": "可查询", "en": "Askable"}
    can_lookup = True

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.sends = 0

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        self.sends += 1
        self.known.add(idempotency_key)
        return SendResult("delivered", f"ref-{idempotency_key}")

    def lookup(self, idempotency_key: str) -> SendResult:
        if idempotency_key in self.known:
            return SendResult("delivered", f"ref-{idempotency_key}")
        return SendResult("not_found")


def _register(monkeypatch: pytest.MonkeyPatch, channel: Channel) -> None:
    """A test's channel type, in the registry for this test only."""
    catalogue = loaded_registry().catalogue("channel_adapter")
    monkeypatch.setitem(catalogue._items, channel.name, channel)


def test_a_hanging_gateway_does_not_stall_the_sweep(common: Engine,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    _register(monkeypatch, Hanging())
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "hanging")
    for n in range(3):
        _enqueue(common, f"hang-{n}", f"P{n}")
    flow = tmp_path / "hang" / "flows"
    flow.mkdir(parents=True)
    (tmp_path / "hang" / "app.yaml").write_text(
        "id: hang\nname: {zh-CN: 测试, en: Test}\nversion: 0.1.0\nformat: 1\n"
        "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
    (flow / "w.yaml").write_text(
        "kind: flow\nkey: w\ntitle: {zh-CN: 等待, en: Wait}\ntrigger: {manual: true}\nsteps:\n"
        "  - {key: later, type: wait, duration: 1h}\n  - {key: done, type: end}\n", "utf-8")
    import_bundle(tmp_path / "hang", engine=common)
    with frozen_now(T0), transaction(common) as session:
        start(session, flow_key="w", patient_id="P1", idempotency_key="w-1")
    try:
        report = run_due(common, now=T0 + timedelta(hours=2))
    finally:
        Hanging.release.set()
    assert report.fired == 1  # the timer fired although every send hung
    with transaction(common) as session:
        assert session.scalars(select(FlowTimer.status)).all() == ["fired"]
    # plain provider, outcome unknown: a person decides; never resent blind
    assert {(r.status, r.reason) for r in _rows(common)} == {("unknown", "outcome_unknown")}


def test_after_a_crash_a_provider_that_can_be_asked_is_asked_not_sent_again(
        common: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    askable = Askable()
    _register(monkeypatch, askable)
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "askable")
    arrived = _enqueue(common, "ask-1", "P1")
    lost = _enqueue(common, "ask-2", "P2")
    askable.known.add("ask-1")  # the provider accepted it; the dispatcher died before commit
    with transaction(common) as session:  # what the dead dispatcher left behind
        session.execute(update(OutboxMessage).values(
            status="sending", attempts=1, attempt_started_at=T0, claimed_by="dead",
            claim_token="t", claimed_until=T0 + timedelta(minutes=2)))
    counts = outbox.dispatch_due(common, worker="w", now=T0 + timedelta(minutes=5))
    rows = {r.id: r for r in _rows(common)}
    assert (rows[arrived].status, rows[arrived].provider_ref) == ("sent", "ref-ask-1")
    assert rows[lost].status == "sent" and askable.sends == 1  # only the lost one was sent
    assert counts["requeued"] == 1


def test_log_channel_is_logged_not_delivered_and_tasks_untouched(common: Engine) -> None:
    message_id = _enqueue(common, "log-1", "P1")
    outbox.dispatch_due(common, worker="w", now=T0)
    (row,) = _rows(common)
    assert (row.id, row.status, row.reason) == (message_id, "logged", "log_channel")
    with transaction(common) as session:
        assert session.scalars(select(Task)).all() == []


def test_outbox_status_names_each_channels_type_and_its_configuration(
        common: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_CHANNEL_SMS", "webhook")
    monkeypatch.setenv("CARELOOP_GATEWAY_URL", "gateway.example.cn")  # no scheme
    monkeypatch.setenv("CARELOOP_CHANNEL_EMAIL", "smtp")
    monkeypatch.setenv("CARELOOP_CHANNEL_WECHAT", "carrier-pigeon")
    result = CliRunner().invoke(outbox_cli, ["status"])
    assert result.exit_code == 0, result.output
    assert "channel sms: not_configured: channel webhook: 'gateway.example.cn' does not match" \
        in result.output
    assert "channel email: smtp ok" in result.output
    assert "channel wechat: no_adapter: no channel type 'carrier-pigeon'" in result.output


def test_a_pass_stops_at_its_budget_and_hands_the_rest_to_the_next_sweep(
        common: Engine) -> None:
    from careloop.flows import webhooks
    from careloop.flows.models import WebhookCall

    for n in range(3):
        _enqueue(common, f"b-{n}", f"P{n}")
    with frozen_now(T0), transaction(common) as session:
        for n in range(3):
            webhooks.enqueue(session, idempotency_key=f"wh-{n}", method="POST",
                             url="http://127.0.0.1:9/x", body={})
    assert outbox.dispatch_due(common, worker="w", now=T0, budget_seconds=0) == {
        "budget_spent": 1}
    assert webhooks.dispatch_due(common, worker="w", now=T0, budget_seconds=0) == {
        "budget_spent": 1}
    with transaction(common) as session:
        calls = session.scalars(select(WebhookCall)).all()
        assert {(c.status, c.claimed_by, c.attempts) for c in calls} == {("pending", None, 0)}
    assert {(r.status, r.claimed_by, r.attempts) for r in _rows(common)} == {
        ("pending", None, 0)}
    # the next sweep, with time to spare, sends them
    assert outbox.dispatch_due(common, worker="w", now=T0) == {"logged": 3}
