"""Load over HTTP: throughput and p50/p95/p99 at 1, 16 and 64 connections (issue 18, point 4).

Paths: the HIS events API (``POST /api/v1/events``, a new patient each), a patient's form
submission (``POST /f/{token}``, a fresh link each), the staff inbox (``GET /inbox``) and the
patient 360 page (``GET /patients/{id}``). Peers in the same run, on the same database: a bare
FastAPI + SQLAlchemy app inserting the same JSON (``POST /insert``) and listing 50 rows
(``GET /list``), served the same way (uvicorn, the same number of processes). Loopback only;
every cell lasts ``--seconds``. The load comes from ``--client-processes`` separate processes
writing raw HTTP/1.1 on keep-alive connections (bench/loadgen.py; ``--client aiohttp`` or
``httpx`` to compare); each cell prints the generator's and the servers' CPU so a reader sees
which was the limit.

    python bench/load.py [--quick] [--json] [--seconds S] [--connections 1,16,64]
                         [--postgres URL] [--processes 1,2] [--no-sqlite]
                         [--paths events,submission,...] [--repeat N]
                         [--client raw|aiohttp|httpx] [--client-processes K] [--plain]

Without ``--postgres`` it runs on SQLite (a temporary file, one process). With it, on a scratch
database next to that URL's for each process count. ``--paths`` runs a subset (with the bare
peers their shares need); ``--repeat N`` measures every cell N times and prints whether the
submission target (≥ 50 % of the bare insert at 16 connections) held in every run.
``--plain`` serves both apps as if uvloop and httptools were not installed (uvicorn uses them
when they are). ``--quick``: SQLite, servers and generator in this process, 1 and 4
connections, half a second per cell (the suite's smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

# bench/loadgen.py, by its name: bench/ is on sys.path (the script's folder, uvicorn's
# --app-dir, the spawned generator processes')
from loadgen import CLIENTS, PASSWORD, Generator

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
def spawned(args: list[str], env: dict[str, str], probe: str) -> Iterator[tuple[str, int]]:
    port = _port()
    proc = subprocess.Popen([*args, "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, probe)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- cells (the load generator: bench/loadgen.py) ------------------------------------------

def measure(careloop: str, bare: str, ctx: dict[str, Any], connections: list[int],
            seconds: float, label: str, generator: Generator, paths: tuple[str, ...] = PATHS,
            pids: dict[str, list[int]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        bare_path = path.startswith("bare_")
        base = bare if bare_path else careloop
        server = (pids or {}).get("bare" if bare_path else "careloop", [])
        for count in connections:
            cell = generator.cell(base, path, count, seconds, ctx,
                                  f"{label}{count}{path[:2]}", server)
            out.setdefault(path, []).append(cell)
            print(f"{label} {path} {count}: {json.dumps(cell)}", file=sys.stderr, flush=True)
    return out


def ratios(cells: dict[str, Any]) -> dict[str, list[float]]:
    """Each path's throughput over its bare peer's, per connection count."""
    return {path: [round(c["per_second"] / max(p["per_second"], 1e-9), 3)
                   for c, p in zip(cells[path], cells[peer], strict=True)]
            for path, peer in PEER.items() if path in cells and peer in cells}


def with_peers(paths: list[str]) -> tuple[str, ...]:
    """The chosen paths in the bench's order, with the bare peers their shares need."""
    wanted = set(paths) | {PEER[p] for p in paths if p in PEER}
    unknown = wanted - set(PATHS)
    if unknown:
        raise SystemExit(f"unknown path(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(PATHS)}")
    return tuple(p for p in PATHS if p in wanted)


# --- configurations -------------------------------------------------------------------------

def quick(tmp: Path, connections: tuple[int, ...] = (1, 4), seconds: float = 0.5,
          client: str = "raw") -> dict[str, Any]:
    """The smoke run on the current default database: servers in threads of this process (the
    Careloop app with its dispatcher thread, as ``careloop serve`` runs it), a bare SQLite
    peer in ``tmp``, the generator in this process too."""
    from careloop.engine import dispatcher
    from careloop.engine.db import default_engine
    from careloop.web.app import create_app

    ctx = prepare(20 * max(connections), tmp)
    running = dispatcher.Dispatcher(poll_seconds=0.2).start()
    generator = Generator(client, 0)
    try:
        with threaded(create_app()) as careloop, \
                threaded(bare_app(f"sqlite:///{tmp / 'bare.db'}")) as bare:
            cells = measure(careloop, bare, ctx, list(connections), seconds, "q", generator)
        queue = queue_after(seconds * 20)
    finally:
        running.stop()
    name = f"{default_engine().dialect.name}_1"
    return {name: {"cells": cells, "ratios": ratios(cells), "runs": [cells], "queue": queue}}


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
             processes: list[int], *, paths: tuple[str, ...] = PATHS, repeat: int = 1,
             client: str = "raw", client_processes: int = 1,
             sqlite: bool = True, plain: bool = False) -> dict[str, Any]:
    from careloop.engine import db

    results: dict[str, Any] = {}
    configs = (([("sqlite", 1)] if sqlite else [])
               + ([("postgresql", n) for n in processes] if postgres else []))
    generator = Generator(client, client_processes)
    try:
        for backend, count in configs:
            results[f"{backend}_{count}"] = _configuration(
                backend, count, connections, seconds, postgres, paths, repeat, generator, plain)
            db._engine_for.cache_clear()
    finally:
        generator.close()
    return results


def _configuration(backend: str, count: int, connections: list[int], seconds: float,
                   postgres: str | None, paths: tuple[str, ...], repeat: int,
                   generator: Generator, plain: bool) -> dict[str, Any]:
    from careloop.engine import db

    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        if backend == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'load.db'}"
            bare_url = f"sqlite:///{Path(tmp) / 'bare.db'}"
        else:
            assert postgres is not None
            schema = f"careloop_load_{os.getpid()}_{count}"
            url = _database(postgres, schema, create=True)
            bare_url = _database(postgres, schema + "_bare", create=True)
        os.environ["CARELOOP_DATABASE_URL"] = url
        db._engine_for.cache_clear()
        tokens = (int(repeat * len(connections) * seconds * 200) + 200
                  if "submission" in paths else 0)
        ctx = prepare(tokens, Path(tmp))
        env = {**os.environ, "CARELOOP_DATABASE_URL": url, "CARELOOP_LOG_LEVEL": "WARNING"}
        if plain:  # both servers as if uvloop and httptools were not installed
            for name in ("uvloop", "httptools"):
                (Path(tmp) / f"{name}.py").write_text("raise ImportError('--plain')\n")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, env.get("PYTHONPATH")]))
        careloop_cmd = [sys.executable, "-m", "careloop", "serve", "--tick-seconds", "0",
                        "--workers", str(count)]
        bare_cmd = [sys.executable, "-m", "uvicorn", "--factory", "load:bare_factory",
                    "--app-dir", str(ROOT / "bench"), "--workers", str(count),
                    "--log-level", "error"]
        bare_env = {**env, "CARELOOP_DATABASE_URL": bare_url}
        runs = []
        try:
            with spawned(careloop_cmd, env, "/healthz") as (careloop, app_pid), \
                    spawned(bare_cmd, bare_env, "/list") as (bare, bare_pid):
                for n in range(repeat):
                    label = f"{backend}{count}" + (f"r{n + 1}" if repeat > 1 else "")
                    runs.append(measure(careloop, bare, ctx, connections, seconds, label,
                                        generator, paths,
                                        {"careloop": [app_pid], "bare": [bare_pid]}))
                queue = queue_after(120)
        finally:
            db._engine_for.cache_clear()
            if schema is not None:
                _database(postgres or "", schema, create=False)
                _database(postgres or "", schema + "_bare", create=False)
    return {"cells": runs[0], "ratios": ratios(runs[0]), "runs": runs,
            "run_ratios": [ratios(r) for r in runs], "queue": queue}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny, in-process")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--postgres", default=os.environ.get("CARELOOP_BENCH_POSTGRES"))
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL configurations only")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help="a subset (their bare peers are added)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every cell")
    parser.add_argument("--client", choices=CLIENTS, default="raw")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--plain", action="store_true",
                        help="serve without uvloop and httptools (as if not installed)")
    args = parser.parse_args()
    if args.quick:
        results = run_quick()
    else:
        results = run_full([int(c) for c in args.connections.split(",")], args.seconds,
                           args.postgres, [int(p) for p in args.processes.split(",")],
                           paths=with_peers(args.paths.split(",")), repeat=args.repeat,
                           client=args.client, client_processes=args.client_processes,
                           sqlite=not args.no_sqlite, plain=args.plain)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return 0
    report(results)
    return 0


def report(results: dict[str, Any]) -> None:
    for config, data in results.items():
        for n, cells in enumerate(data.get("runs", [data["cells"]])):
            shares_of = ratios(cells)
            run = f", run {n + 1}" if len(data.get("runs", ())) > 1 else ""
            print(f"== {config.replace('_', ', ')} process(es){run}")
            print(f"  {'path':<12} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'p99 ms':>8} {'fail':>5} {'of bare':>8} {'client':>7} {'µs/req':>7} "
                  f"{'server':>7} {'µs/req':>7}")
            for path, path_cells in cells.items():
                shares = shares_of.get(path)
                for i, c in enumerate(path_cells):
                    share = f"{shares[i] * 100:6.1f} %" if shares else ""
                    print(f"  {path:<12} {c['connections']:>5} {c['per_second']:>8} "
                          f"{c['p50_ms']:>8} {c['p95_ms']:>8} {c['p99_ms']:>8} "
                          f"{c['failures']:>5} {share:>8} {c.get('client_cpu', '-'):>7} "
                          f"{c.get('client_us', '-'):>7} {c.get('server_cpu', '-'):>7} "
                          f"{c.get('server_us', '-'):>7}"
                          + ("  (ran out of form links)" if c.get("out_of_links") else ""))
        queue = data.get("queue", {})
        print(f"  queue when the load stopped: {queue.get('pending_at_end')} event(s) waiting, "
              f"handled within {queue.get('drain_seconds')} s, {queue.get('parked')} parked")
        submission_target(data)
    pg1, pg2 = results.get("postgresql_1"), results.get("postgresql_2")
    if pg1 and pg2 and "events" in pg1["cells"]:
        one, two = pg1["cells"]["events"][-1], pg2["cells"]["events"][-1]
        print(f"events API, 2 processes over 1 at {one['connections']} connections: "
              f"{two['per_second'] / max(one['per_second'], 1e-9):.2f}x")
    print("client, server: CPU in cores over the cell (1.0 = one core busy), each followed by "
          "its CPU µs per request (the server's: all its processes, dispatcher included). On "
          "2 cores, client + server near 2 means the machine was the limit; a client near 1 "
          "means the generator was.")


def submission_target(data: dict[str, Any]) -> None:
    """Issue 18: submission ≥ 50 % of the bare insert at 16 connections in every run."""
    shares = []
    for cells in data.get("runs", [data["cells"]]):
        if "submission" not in cells or "bare_insert" not in cells:
            return
        at = [i for i, c in enumerate(cells["submission"]) if c["connections"] == 16]
        if not at:
            return
        shares.append(ratios(cells)["submission"][at[0]])
    listed = ", ".join(f"{s * 100:.0f} %" for s in shares)
    met = all(s >= 0.5 for s in shares)
    print(f"  submission at 16 connections, share of the bare insert per run: {listed}; "
          f"≥ 50 % in all {len(shares)}: {'yes' if met else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
