"""Load over HTTP: throughput and p50/p95/p99 at 1, 16 and 64 connections (issue 18, point 4).

Paths: the HIS events API (``POST /api/v1/events``, a new patient each), a patient's form
submission (``POST /f/{token}``, a fresh link each), the staff inbox (``GET /inbox``) and the
patient 360 page (``GET /patients/{id}``). Peers in the same run, on the same database: a bare
FastAPI + SQLAlchemy app inserting the same JSON (``POST /insert``) and listing 50 rows
(``GET /list``), served the same way (uvicorn, the same number of processes). Loopback only;
every cell lasts ``--seconds``; asyncio + httpx clients in this process.

    python bench/load.py [--quick] [--json] [--seconds S] [--connections 1,16,64]
                         [--postgres URL] [--processes 1,2]

Without ``--postgres`` it runs on SQLite (a temporary file, one process). With it, on a fresh
schema of that PostgreSQL database for each process count. ``--quick``: SQLite, servers in
threads of this process, 1 and 4 connections, half a second per cell (the suite's smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

PASSWORD = "Correct-Horse-Battery-9"
ROOT = Path(__file__).resolve().parents[1]
APP_YAML = ("id: load_lab\nname: {zh-CN: 压测, en: Load lab}\nversion: 0.1.0\nformat: 1\n"
            "default_locale: zh-CN\n")
FORM_YAML = """kind: form
key: load_check
title: {zh-CN: 出院回访, en: Discharge check}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
  - {key: note, type: long_text, label: {zh-CN: 想说的话, en: Anything to add}}
"""
PATHS = ("events", "submission", "inbox", "patient_360", "bare_insert", "bare_list")
PEER = {"events": "bare_insert", "submission": "bare_insert", "inbox": "bare_list",
        "patient_360": "bare_list"}


# --- the bare peer --------------------------------------------------------------------------

def bare_app(url: str) -> Any:
    """FastAPI + SQLAlchemy and nothing else: the floor a request with one insert or one
    50-row select pays on this machine and database."""
    from fastapi import FastAPI
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine, select
    from sqlalchemy import insert as sql_insert

    from careloop.engine.db import pool_size

    size, overflow = pool_size()
    kwargs: dict[str, Any] = ({} if url.startswith("sqlite") else
                              {"pool_size": size, "max_overflow": overflow})
    engine = create_engine(url, **kwargs)
    meta = MetaData()
    rows = Table("bare_events", meta, Column("id", Integer, primary_key=True),
                 Column("event_id", String(128), unique=True), Column("body", JSON))
    meta.create_all(engine)
    app = FastAPI()

    @app.post("/insert")
    def insert(body: dict[str, Any]) -> dict[str, Any]:
        with engine.begin() as conn:
            new_id = conn.execute(sql_insert(rows).values(event_id=body["event_id"], body=body)
                                  .returning(rows.c.id)).scalar_one()
        return {"status": "accepted", "id": new_id}

    @app.get("/list")
    def listing() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            found = conn.execute(select(rows.c.id, rows.c.event_id, rows.c.body)
                                 .order_by(rows.c.id.desc()).limit(50)).all()
        return [{"id": r.id, "event_id": r.event_id, "type": r.body.get("type")} for r in found]

    return app


def bare_factory() -> Any:  # for uvicorn --factory in worker processes
    return bare_app(os.environ["CARELOOP_DATABASE_URL"])


# --- preparing the hospital ------------------------------------------------------------------

def prepare(tokens: int, tmp: Path) -> dict[str, Any]:
    """Schema, a ward, a nurse, an API key, 60 patients with open tasks and ``tokens`` form
    links; everything through the engines' own functions."""
    from careloop.engine import tasks as task_engine
    from careloop.engine.bundles import import_bundles, list_bundles
    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department, Encounter, Patient
    from careloop.engine.migrate import upgrade
    from careloop.engine.registry import loaded_registry
    from careloop.flows.ingest import create_api_key
    from careloop.web import admin

    upgrade()
    bundle = tmp / "load_lab"
    (bundle / "forms").mkdir(parents=True, exist_ok=True)
    (bundle / "app.yaml").write_text(APP_YAML, "utf-8")
    (bundle / "forms" / "load_check.yaml").write_text(FORM_YAML, "utf-8")
    import_bundles(list_bundles([tmp]), actor="bench")
    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction() as session:
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.flush()
        nurse = admin.create_user(session, username="nurse", display_name="护士",
                                  password=PASSWORD)
        admin.grant(session, nurse, "nurse", "cardio")
        key = create_api_key(session, "load")
        for n in range(60):
            session.add(Patient(id=f"p{n}", mrn=f"MRN{n:05d}", name=f"患者{n}",
                                phone="13800138000"))
            session.flush()
            session.add(Encounter(id=f"e{n}", patient_id=f"p{n}", type="inpatient",
                                  department_id="cardio", status="discharged",
                                  discharged_at=now_utc()))
            session.flush()
            task_engine.create_task(session, title="出院随访电话", patient_id=f"p{n}",
                                    encounter_id=f"e{n}", actor="bench",
                                    assignee=task_engine.Assignee(None, "nurse", "cardio"),
                                    due_at=now_utc() + timedelta(hours=n))
        urls = [create(session, form_key="load_check", patient_id=f"p{n % 60}",
                       encounter_id=f"e{n % 60}", channel="sms",
                       expires_at=now_utc() + timedelta(days=7))["url"] for n in range(tokens)]
    return {"api_key": key, "links": urls}


# --- servers --------------------------------------------------------------------------------

def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(base: str, path: str, seconds: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + path, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} did not start")


@contextmanager
def threaded(app: Any) -> Iterator[str]:
    import uvicorn

    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def spawned(args: list[str], env: dict[str, str], probe: str) -> Iterator[str]:
    port = _port()
    proc = subprocess.Popen([*args, "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, probe)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- load -----------------------------------------------------------------------------------

def _quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _load(base: str, make: Callable[[Any, int], Any], connections: int,
                seconds: float, staff: bool) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    failures = 0
    first_failure: list[str] = []
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        if staff:  # the HIS and patients have no staff session (and no CSRF token)
            await _sign_in(client)
        deadline = time.perf_counter() + seconds

        async def one_connection() -> None:
            nonlocal failures
            while True:  # at least one request each, then until the deadline
                request = make(client, next(counter))
                if request is None:  # out of form links
                    return
                started = time.perf_counter()
                try:
                    response = await request
                except httpx.HTTPError as exc:  # dropped under load: a failure, not the end
                    failures += 1
                    first_failure.append(type(exc).__name__)
                    if started >= deadline:
                        return
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code >= 400:
                    failures += 1
                    first_failure.append(f"{response.status_code} {response.text[:200]}")
                if started >= deadline:
                    return

        started = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"connections": connections, "requests": len(latencies), "failures": failures,
            "per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(_quantile(latencies, 50), 1),
            "p95_ms": round(_quantile(latencies, 95), 1),
            "p99_ms": round(_quantile(latencies, 99), 1),
            **({"first_failure": first_failure[0]} if first_failure else {})}


async def _sign_in(client: Any) -> None:
    page = await client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    await client.post("/login", data={"username": "nurse", "password": PASSWORD,
                                      "csrf_token": token, "next": "/"})


def requests_for(ctx: dict[str, Any], run: str) -> dict[str, Callable[[Any, int], Any]]:
    taken = ctx.setdefault("unused_links", iter(list(ctx["links"])))  # each link answered once

    def event(client: Any, n: int) -> Any:
        return client.post("/api/v1/events", headers={"X-API-Key": ctx["api_key"]}, json={
            "event_id": f"load-{run}-{n}", "type": "patient.upserted",
            "payload": {"patient_id": f"L{run}{n}", "mrn": f"L{run}{n}", "name": "压测患者"}})

    def submission(client: Any, n: int) -> Any:
        url = next(taken, None)
        if url is None:
            return None
        return client.post(url, data={"_page": "0", "_lang": "zh-CN", "_action": "submit",
                                      "ok": "yes", "note": "都好"})

    def bare_insert(client: Any, n: int) -> Any:
        return client.post("/insert", json={
            "event_id": f"load-{run}-{n}", "type": "patient.upserted",
            "payload": {"patient_id": f"L{run}{n}", "mrn": f"L{run}{n}", "name": "压测患者"}})

    return {"events": event, "submission": submission,
            "inbox": lambda c, n: c.get("/inbox"),
            "patient_360": lambda c, n: c.get(f"/patients/p{n % 60}"),
            "bare_insert": bare_insert, "bare_list": lambda c, n: c.get("/list")}


def measure(careloop: str, bare: str, ctx: dict[str, Any], connections: list[int],
            seconds: float, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in PATHS:
        base = bare if path.startswith("bare_") else careloop
        for count in connections:
            make = requests_for(ctx, f"{label}{count}{path[:2]}")[path]
            cell = asyncio.run(_load(base, make, count, seconds,
                                     staff=path in ("inbox", "patient_360")))
            out.setdefault(path, []).append(cell)
            print(f"{label} {path} {count}: {json.dumps(cell)}", file=sys.stderr, flush=True)
    return out


def ratios(cells: dict[str, Any]) -> dict[str, list[float]]:
    """Each path's throughput over its bare peer's, per connection count."""
    return {path: [round(c["per_second"] / max(p["per_second"], 1e-9), 3)
                   for c, p in zip(cells[path], cells[peer], strict=True)]
            for path, peer in PEER.items()}


# --- configurations -------------------------------------------------------------------------

def quick(tmp: Path, connections: tuple[int, ...] = (1, 4),
          seconds: float = 0.5) -> dict[str, Any]:
    """The smoke run on the current default database: servers in threads of this process (the
    Careloop app with its dispatcher thread, as ``careloop serve`` runs it), a bare SQLite
    peer in ``tmp``."""
    from careloop.engine import dispatcher
    from careloop.engine.db import default_engine
    from careloop.web.app import create_app

    ctx = prepare(20 * max(connections), tmp)
    running = dispatcher.Dispatcher(poll_seconds=0.2).start()
    try:
        with threaded(create_app()) as careloop, \
                threaded(bare_app(f"sqlite:///{tmp / 'bare.db'}")) as bare:
            cells = measure(careloop, bare, ctx, list(connections), seconds, "q")
        queue = queue_after(seconds * 20)
    finally:
        running.stop()
    name = f"{default_engine().dialect.name}_1"
    return {name: {"cells": cells, "ratios": ratios(cells), "queue": queue}}


def queue_after(limit: float) -> dict[str, Any]:
    """Events still waiting when the load stopped, and how long the dispatchers took to handle
    them (the API acknowledges before handling: this is the work it moved, not dropped)."""
    from careloop.engine import dispatcher

    started = time.perf_counter()
    waiting = dispatcher.state().pending
    while dispatcher.state().pending and time.perf_counter() - started < limit:
        time.sleep(0.1)
    left = dispatcher.state()
    return {"pending_at_end": waiting, "drain_seconds": round(time.perf_counter() - started, 2),
            "pending_after": left.pending, "parked": left.parked}


def run_quick() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CARELOOP_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'load.db'}"
        return quick(Path(tmp))


def _database(url: str, name: str, *, create: bool) -> str:
    """Create (or drop) a scratch database next to ``url``'s; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def run_full(connections: list[int], seconds: float, postgres: str | None,
             processes: list[int]) -> dict[str, Any]:
    from careloop.engine import db

    results: dict[str, Any] = {}
    configs = [("sqlite", 1)] + ([("postgresql", n) for n in processes] if postgres else [])
    for backend, count in configs:
        with tempfile.TemporaryDirectory() as tmp:
            schema = None
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'load.db'}"
                bare_url = f"sqlite:///{Path(tmp) / 'bare.db'}"
                env_url = url
            else:
                assert postgres is not None
                schema = f"careloop_load_{os.getpid()}_{count}"
                env_url = url = _database(postgres, schema, create=True)
                bare_url = _database(postgres, schema + "_bare", create=True)
            os.environ["CARELOOP_DATABASE_URL"] = env_url
            db._engine_for.cache_clear()
            tokens = int(len(connections) * seconds * 150) + 200
            ctx = prepare(tokens, Path(tmp))
            env = {**os.environ, "CARELOOP_DATABASE_URL": env_url,
                   "CARELOOP_LOG_LEVEL": "WARNING"}
            careloop_cmd = [sys.executable, "-m", "careloop", "serve", "--tick-seconds", "0",
                            "--workers", str(count)]
            bare_cmd = [sys.executable, "-m", "uvicorn", "--factory", "load:bare_factory",
                        "--app-dir", str(ROOT / "bench"), "--workers", str(count),
                        "--log-level", "error"]
            bare_env = {**env, "CARELOOP_DATABASE_URL": bare_url}
            try:
                with spawned(careloop_cmd, env, "/healthz") as careloop, \
                        spawned(bare_cmd, bare_env, "/list") as bare:
                    cells = measure(careloop, bare, ctx, connections, seconds, f"{backend}{count}")
                    queue = queue_after(120)
            finally:
                db._engine_for.cache_clear()
                if schema is not None:
                    _database(postgres or "", schema, create=False)
                    _database(postgres or "", schema + "_bare", create=False)
            results[f"{backend}_{count}"] = {"cells": cells, "ratios": ratios(cells),
                                              "queue": queue}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny, in-process")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--postgres", default=os.environ.get("CARELOOP_BENCH_POSTGRES"))
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    if args.quick:
        results = run_quick()
    else:
        results = run_full([int(c) for c in args.connections.split(",")], args.seconds,
                           args.postgres, [int(p) for p in args.processes.split(",")])
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return 0
    report(results)
    return 0


def report(results: dict[str, Any]) -> None:
    for config, data in results.items():
        print(f"== {config.replace('_', ', ')} process(es)")
        print(f"  {'path':<12} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p99 ms':>8} {'fail':>5}  of bare")
        for path, cells in data["cells"].items():
            shares = data["ratios"].get(path)
            for i, c in enumerate(cells):
                share = f"{shares[i] * 100:6.1f} %" if shares else ""
                print(f"  {path:<12} {c['connections']:>5} {c['per_second']:>8} "
                      f"{c['p50_ms']:>8} {c['p95_ms']:>8} {c['p99_ms']:>8} "
                      f"{c['failures']:>5}  {share}")
        queue = data.get("queue", {})
        print(f"  queue when the load stopped: {queue.get('pending_at_end')} event(s) waiting, "
              f"handled within {queue.get('drain_seconds')} s, {queue.get('parked')} parked")
    pg1, pg2 = results.get("postgresql_1"), results.get("postgresql_2")
    if pg1 and pg2:
        one, two = pg1["cells"]["events"][-1], pg2["cells"]["events"][-1]
        print(f"events API, 2 processes over 1 at {one['connections']} connections: "
              f"{two['per_second'] / max(one['per_second'], 1e-9):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
