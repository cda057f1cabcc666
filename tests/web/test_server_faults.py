"""Fault tests of issue 20 against a real uvicorn server on the loopback address (bounded: each
takes seconds; timeouts are shortened by configuration, never waited out in full).

* 16 HIS senders post events while a webhook gateway hangs: ``/healthz`` and the patient page
  keep a p99 under 100 ms (the one measured test the issue asks for; p99 over 200 requests).
* The database "freezes" (PostgreSQL: a loopback TCP proxy in front of it stops forwarding — the
  shared server is never stopped; SQLite: every statement waits at a gate): pages answer the
  static 503 within the statement timeout, ``/healthz`` stays up, ``/readyz`` says why, and all
  of it recovers by itself once the database answers again.
* Deep JSON, a lone surrogate and 20,000 tags: a 4xx naming the field path, quickly.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine, event, text

from careloop.engine.db import make_engine, use_engine
from careloop.engine.db import transaction as db_transaction
from careloop.flows.ingest import create_api_key
from careloop.web.app import create_app

# Latency and elapsed-time assertions: run alone, never beside a parallel worker (.ci/test).
pytestmark = pytest.mark.serial

PHONE = "0571-87654321"


@contextmanager
def serve(app: Any) -> Iterator[tuple[str, int]]:
    """uvicorn in a thread of this process, on a free loopback port."""
    sock = socket.socket()
    # accepted connections inherit it: no Nagle delay on keep-alive answers (as uvicorn's own
    # sockets; without it each keep-alive answer waits for a delayed ACK, ~40 ms)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False,
                            timeout_keep_alive=30)
    server = uvicorn.Server(config)
    gc.freeze()  # as careloop serve does (settle_heap; its collect would finalise other tests'
    # leftovers inside this one)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        gc.unfreeze()


def get(address: tuple[str, int], path: str, *, timeout: float = 30,
        conn: http.client.HTTPConnection | None = None, **headers: str) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET."""
    own = conn or http.client.HTTPConnection(*address, timeout=timeout)
    started = time.perf_counter()
    own.request("GET", path, headers=headers)
    response = own.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if conn is None:
        own.close()
    return response.status, body, elapsed


def post_json(address: tuple[str, int], path: str, body: bytes,
              **headers: str) -> tuple[int, dict[str, Any], float]:
    conn = http.client.HTTPConnection(*address, timeout=30)
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                   **headers})
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return response.status, json.loads(data or b"{}"), elapsed


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DB_STATEMENT_TIMEOUT", "1")
    monkeypatch.setenv("CARELOOP_DB_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("CARELOOP_READY_TIMEOUT", "1")
    monkeypatch.setenv("CARELOOP_READY_TICKER_SECONDS", "0")
    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", PHONE)


# --- the frozen database --------------------------------------------------------------------


class FreezableProxy:
    """A loopback TCP proxy (asyncio, in its own thread) that can stop forwarding: bytes stay
    where they are, new connections wait — a frozen server as its clients see it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.loop = asyncio.new_event_loop()
        self.thawed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.thawed.set()
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.thawed.wait()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.thawed.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # one side closed: close the other
        writer.close()

    def freeze(self) -> None:
        self.loop.call_soon_threadsafe(self.thawed.clear)

    def thaw(self) -> None:
        self.loop.call_soon_threadsafe(self.thawed.set)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for writer in self.writers:
                writer.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def freezable(engine: Engine) -> Iterator[tuple[Any, Any]]:
    """(freeze, thaw) for the app's database: the proxy on PostgreSQL, a gate on SQLite."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
        url = engine.url
        proxy = FreezableProxy(url.host or "127.0.0.1", url.port or 5432)
        proxied = make_engine(url.set(host="127.0.0.1", port=proxy.port)
                              .render_as_string(hide_password=False),
                              connect_args={"options": f"-csearch_path={schema}"})
        try:
            with use_engine(proxied):
                yield proxy.freeze, proxy.thaw
        finally:
            proxy.thaw()
            proxied.dispose()
            proxy.close()
        return
    gate = threading.Event()
    gate.set()

    def wait_at_gate(*_: Any) -> None:
        gate.wait(30)

    event.listen(engine, "before_cursor_execute", wait_at_gate)
    try:
        yield gate.clear, gate.set
    finally:
        gate.set()
        event.remove(engine, "before_cursor_execute", wait_at_gate)


def test_a_frozen_database_gives_503_within_the_timeout_and_recovers(
        engine: Engine, short_timeouts: None) -> None:
    with freezable(engine) as (freeze, thaw), serve(create_app()) as address:
        status, _, _ = get(address, "/f/no-such-link")
        assert status != 503
        assert get(address, "/readyz")[0] == 200
        freeze()
        try:
            status, body, seconds = get(address, "/f/no-such-link")
            assert status == 503 and seconds < 2.5, (status, seconds)
            page = body.decode()
            assert page.index("系统暂时无法使用") < page.index("briefly unavailable")
            assert PHONE in page and "request" not in page.lower()
            api_status, api_body, _ = get(address, "/api/v1/flows/runs")
            assert api_status == 503 and b"database.unavailable" in api_body
            status, _, seconds = get(address, "/healthz")
            assert status == 200 and seconds < 0.5  # liveness needs no database
            for _ in range(3):  # repeated probes: each answers within its timeout
                status, body, seconds = get(address, "/readyz")
                assert status == 503 and seconds < 2.5
                assert json.loads(body)["checks"]["database"] == {
                    "ok": False, "error": "timeout", "limit_seconds": 1.0}
        finally:
            thaw()
        # recovers by itself: no restart, no intervention
        for _ in range(100):
            status = get(address, "/f/no-such-link")[0]
            if status != 503:
                break
            time.sleep(0.1)
        assert status != 503
        assert get(address, "/readyz")[0] == 200


# --- bodies a route must never parse --------------------------------------------------------


def test_deep_json_surrogates_and_huge_arrays_get_a_located_4xx_quickly(
        engine: Engine) -> None:
    with db_transaction() as session:
        key = create_api_key(session, "his")
    headers = {"X-API-Key": key}
    with serve(create_app()) as address:
        cases = [
            (b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "request.too-deep",
             "$.payload" + "[0]" * 71),
            (b'{"type": "patient.upserted", "payload": {"name": "\\ud800"}}',
             "request.lone-surrogate", "$.payload.name"),
            (json.dumps({"type": "patient.upserted", "event_id": "t-1",
                         "payload": {"patient_id": "P1", "tags": [f"t{i}" for i in
                                                                  range(20_000)]}}).encode(),
             "request.too-many-items", "$.payload.tags"),
        ]
        for body, code, path in cases:
            status, answer, seconds = post_json(address, "/api/v1/events", body, **headers)
            assert status == 422 and answer["code"] == code, answer
            assert answer["errors"][0]["path"] == path
            assert seconds < 2
        # the same bodies anywhere under /api/ (here: the builder, which needs a session first)
        status, answer, _ = post_json(address, "/api/v1/builder/validate/form/x",
                                      b'{"body": ' + b"{\"a\": " * 200 + b"1" + b"}" * 200 + b"}")
        assert status == 422 and answer["code"] == "request.too-deep"
        assert answer["errors"][0]["path"].startswith("$.body.a.a.a")
        # and an ordinary event still goes in
        ok = json.dumps({"event_id": "p-1", "type": "patient.upserted",
                         "payload": {"patient_id": "P1", "mrn": "MRN1", "name": "张三",
                                     "tags": ["vip"]}}).encode()
        assert post_json(address, "/api/v1/events", ok, **headers)[0] == 200


# --- 16 HIS senders and a hanging webhook gateway --------------------------------------------

SENDER = r"""
import http.client, json, os, sys, threading, time
host, port, key, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sent = [0] * 16
def run(n):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    end, i = time.monotonic() + 120, 0  # a bound in case the test dies
    while time.monotonic() < end and not os.path.exists(stop):
        i += 1
        event = {"event_id": f"s{n}-{i}", "type": "patient.upserted",
                 "payload": {"patient_id": f"P{n}-{i % 50}", "mrn": f"M{n}-{i % 50}",
                             "name": "张三", "tags": ["a", "b"]}}
        conn.request("POST", "/api/v1/events", body=json.dumps(event),
                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        response = conn.getresponse(); response.read()
        if response.status < 500:
            sent[n] += 1
threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sum(sent))
"""

TICKER = r"""
import sys, time
from careloop.engine import ticker
from careloop.engine.db import make_engine, use_engine
url, schema = sys.argv[1], sys.argv[2]
engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"} if schema else {})
with use_engine(engine):
    while True:
        ticker.tick(engine)
        time.sleep(0.5)
"""

HOOK_APP = """id: hooks
name: {zh-CN: 接口, en: Hooks}
version: 0.1.0
format: 1
default_locale: zh-CN
scope: hospital
"""


def _hanging_gateway() -> tuple[socket.socket, list[socket.socket]]:
    """Accepts connections and never answers (the webhook gateway of the issue)."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listening.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listening, held


def _background() -> None:
    """The senders stand for hospital systems on other machines, and the ticker process for a
    worker the operator would run niced: on one shared CI machine they must not take the CPU
    the server under measurement needs (they still load it with every event)."""
    os.nice(19)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_16_senders_and_a_hanging_gateway_leave_pages_fast(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from careloop.engine.bundles import import_bundle
    from careloop.flows import egress

    gateway, held = _hanging_gateway()
    port = gateway.getsockname()[1]
    app_dir = tmp_path / "hooks"
    (app_dir / "flows").mkdir(parents=True)
    (app_dir / "app.yaml").write_text(HOOK_APP, "utf-8")
    (app_dir / "flows" / "forward.yaml").write_text(
        "kind: flow\nkey: forward\ntitle: {zh-CN: 转发, en: Forward}\n"
        "trigger: {event: patient.upserted}\nsteps:\n"
        f"  - {{key: call, type: call_webhook, url: 'http://127.0.0.1:{port}/in', "
        "retry: {attempts: 1}}\n  - {key: done, type: end}\n", "utf-8")
    import_bundle(app_dir, engine=engine, actor="test")
    with db_transaction() as session:
        egress.allow(session, "127.0.0.1", allow_private=True)
        key = create_api_key(session, "his")
    monkeypatch.setenv("CARELOOP_WEBHOOK_TIMEOUT", "30")  # the gateway hangs the sweep
    # the ticker in a process of its own, as docs/operations.md advises for busy sites: its sweep
    # (here stuck on the gateway, and starting a flow per event) shares no interpreter lock
    # with the web process
    schema = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
    ticking = None
    try:
        with serve(create_app()) as address:
            first = json.dumps({"event_id": "first", "type": "patient.upserted",
                                "payload": {"patient_id": "P0", "mrn": "M0", "name": "张三"}})
            assert post_json(address, "/api/v1/events", first.encode(), **{"X-API-Key": key}
                             )[0] == 200
            ticking = subprocess.Popen(
                [sys.executable, "-c", TICKER, engine.url.render_as_string(hide_password=False),
                 schema or ""], env={**os.environ}, preexec_fn=_background)
            for _ in range(300):  # the sweep is stuck on the gateway before the load starts
                if held:
                    break
                time.sleep(0.05)
            assert held
            stop = tmp_path / "stop"
            senders = subprocess.Popen(
                [sys.executable, "-c", SENDER, address[0], str(address[1]), key, str(stop)],
                stdout=subprocess.PIPE, text=True, env={**os.environ}, preexec_fn=_background)
            try:
                conn = http.client.HTTPConnection(*address, timeout=30)
                for _ in range(5):  # templates compiled, modules imported (not measured)
                    get(address, "/healthz", conn=conn)
                    get(address, "/f/no-such-link", conn=conn)
                time.sleep(0.5)  # the senders are up to speed
                # p99 of 200 requests each; a second window only if the first one missed (a
                # shared CI machine's scheduler can stall any process; blocking work on the
                # event loop, as in the issue, misses every window by a wide margin)
                for _ in range(2):
                    health = [get(address, "/healthz", conn=conn)[2] for _ in range(200)]
                    page = [get(address, "/f/no-such-link", conn=conn)[2] for _ in range(200)]
                    if _p99(health) < 0.1 and _p99(page) < 0.1:
                        break
                conn.close()
                still_sending = senders.poll() is None
            finally:
                stop.touch()
                out, _ = senders.communicate(timeout=60)
    finally:
        if ticking is not None:
            ticking.terminate()
            ticking.wait(30)
        gateway.close()
        for sock in held:
            sock.close()
    assert still_sending  # the measurement ran under load
    assert int(out.strip()) > 50
    assert _p99(health) < 0.1, sorted(health)[-5:]
    assert _p99(page) < 0.1, sorted(page)[-5:]
