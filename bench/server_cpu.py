"""Server CPU per request, Careloop's hot paths against the bare FastAPI + SQLAlchemy peer.

The load benchmark (``bench/load.py``) measures throughput under concurrency, where a one-process
server on this 2-core machine is CPU-bound from one connection on: its throughput share of the
bare peer is, near enough, the ratio of their CPU per request. This bench measures that CPU
directly and reproducibly: each app is called through ASGI in this thread (the thread pool run
inline, no HTTP client, no sockets), ``time.process_time`` per request over ``--requests``
requests after a warm-up, on one database (SQLite file, or a scratch PostgreSQL database next to
``--postgres URL``). The same requests as bench/load.py: a new patient's HIS event
(``POST /api/v1/events``) — and, separately, the dispatcher handling the stored events
(``drain()``) — a patient answering a fresh form link (``POST /f/{token}``), the ward nurse's
inbox (60 open tasks) and a patient 360 page, against the bare insert and the bare 50-row list.

    python bench/server_cpu.py [--postgres URL] [--requests N] [--json] [--quick]

Prints CPU ms per request, SQL statements per request and each path's "share" = the peer's CPU
over the path's (events: the request and its handling together). The HTTP server's own work
(uvicorn parsing and writing, about 1-1.5 ms a request on this machine, the same for every
route) is not in either figure, so these shares are lower than the throughput shares bench/load.py
measures through real sockets (issue 18's targets are on those: 40 % for events, 50 % for
submissions and the inbox); they show where the application's own CPU goes and how it moves.
``--quick`` (the suite's smoke run) asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PEER = {"events": "bare_insert", "submission": "bare_insert", "inbox": "bare_list",
        "patient_360": "bare_list"}
ORDER = ("bare_insert", "bare_list", "events", "dispatch", "submission", "inbox", "patient_360")

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
Call = Callable[[str, str, str, str, bytes], Awaitable[Answer]]


def _inline_threads() -> None:
    """Run FastAPI's sync endpoints in this thread (process_time then sees one thread's work)."""
    import anyio.to_thread

    async def inline(func: Callable[..., Any], *args: Any, **_kw: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]


def asgi_caller(app: Any, cookies: dict[str, str]) -> Call:
    """One request through ``app`` as an HTTP/1.1 server would pass it; cookies kept."""

    async def call(method: str, target: str, ctype: str, extra: str,
                   body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        path, _, query = target.partition("?")
        headers = [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
        if ctype:
            headers.append((b"content-type", ctype.encode()))
        for line in extra.split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower().encode(), value.strip().encode()))
        if cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())
                            .encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        status, chunks, response_headers = 0, [], []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status, response_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        for name, value in response_headers:
            if name.lower() == b"set-cookie":
                key, _, rest = value.decode().partition("=")
                cookies[key] = rest.split(";", 1)[0]
        return status, b"".join(chunks), response_headers

    return call


class Statements:
    """SQL statements sent while counting."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self)

    def __call__(self, *_args: Any) -> None:
        self.count += 1


async def _measure(call: Call, make: Callable[[int], Any], n: int, warm: int, ok: int,
                   first: int, statements: Statements) -> dict[str, float]:
    for i in range(warm):
        request = make(first + i)
        status, body, _ = await call(*request)
        assert status == ok, (request[:2], status, body[:300])
    times = []
    before = statements.count
    for i in range(warm, warm + n):
        request = make(first + i)
        start = time.process_time()
        status, body, _ = await call(*request)
        times.append(time.process_time() - start)
        assert status == ok, (request[:2], status, body[:300])
    return {"cpu_ms": 1000 * statistics.fmean(times), "median_ms": 1000 * statistics.median(times),
            "statements": (statements.count - before) / n, "requests": n}


async def _sign_in(call: Call, password: str) -> None:
    status, page, _ = await call("GET", "/login", "", "", b"")
    token = page.decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    from urllib.parse import urlencode

    form = urlencode({"username": "nurse", "password": password, "csrf_token": token,
                      "next": "/"}).encode()
    status, body, _ = await call("POST", "/login", "application/x-www-form-urlencoded", "", form)
    assert status == 303, (status, body[:300])


def run(url: str, tmp: Path, requests: int, warm: int) -> dict[str, Any]:
    os.environ["CARELOOP_DATABASE_URL"] = url
    os.environ.setdefault("CARELOOP_AUDIT_KEY_FILE", str(tmp / "audit.key"))
    os.environ.setdefault("CARELOOP_HOME", str(tmp))
    sys.path.insert(0, str(BENCH))
    import load  # type: ignore[import-not-found]
    from loadgen import PASSWORD, requests_for  # type: ignore[import-not-found]

    from careloop.engine import dispatcher
    from careloop.engine.db import default_engine
    from careloop.web.app import create_app

    _inline_threads()
    ctx = load.prepare(2 * (requests + warm), tmp)
    links = ["/" + u.split("://", 1)[-1].split("/", 1)[1] for u in ctx["links"]]
    dispatcher.wake = lambda *a, **k: None  # the drain below handles the events, measured apart
    app, bare = create_app(), load.bare_app(url)
    statements = Statements(default_engine())

    results: dict[str, Any] = {"database": default_engine().dialect.name}

    async def main() -> None:
        careloop = asgi_caller(app, {})  # the HIS and the patients: no staff session
        staff = asgi_caller(app, {})
        peer = asgi_caller(bare, {})
        await _sign_in(staff, PASSWORD)
        peer_statements = Statements(_bare_engine(bare))
        spec = {"run": "cpu", "api_key": ctx["api_key"], "links": links}
        for path in ("bare_insert", "bare_list"):
            make = requests_for({**spec, "path": path})
            results[path] = await _measure(peer, make, requests, warm, 200, 0, peer_statements)
        for path, ok in (("events", 200), ("dispatch", 0), ("submission", 200), ("inbox", 200),
                         ("patient_360", 200)):
            if path == "dispatch":
                results[path] = _drain(statements)
                continue
            make = requests_for({**spec, "path": path})
            results[path] = await _measure(staff if path in ("inbox", "patient_360")
                                           else careloop, make, requests, warm, ok,
                                           10**6 if path == "events" else 0, statements)

    asyncio.run(main())
    return results


def _drain(statements: Statements) -> dict[str, float]:
    """The stored events' handlers, as a serving process's dispatcher thread runs them."""
    from careloop.engine import dispatcher

    before, start = statements.count, time.process_time()
    handled = dispatcher.drain().handled
    spent = time.process_time() - start
    assert handled, "no event was waiting for its handlers"
    return {"cpu_ms": 1000 * spent / handled, "median_ms": float("nan"),
            "statements": (statements.count - before) / handled, "requests": handled}


def _bare_engine(app: Any) -> Any:
    """The bare app's engine (its insert route's closure)."""
    for route in app.routes:
        if getattr(route, "path", "") == "/insert":
            closure = route.endpoint.__closure__ or ()
            for cell in closure:
                if hasattr(cell.cell_contents, "dialect"):
                    return cell.cell_contents
    raise RuntimeError("the bare app's engine was not found")


def shares(results: dict[str, Any]) -> dict[str, float]:
    """Each path's peer CPU over its own (events: the request and its handling together)."""
    out = {}
    for path, peer in PEER.items():
        own = results[path]["cpu_ms"] + (results["dispatch"]["cpu_ms"] if path == "events" else 0)
        out[path] = results[peer]["cpu_ms"] / own
    return out


def report(results: dict[str, Any]) -> None:
    print(f"== {results['database']}: server CPU per request (ASGI in one thread)")
    print(f"  {'path':<12} {'CPU ms':>8} {'median':>8} {'stmts':>6} {'share of peer':>14}"
          "  (peer's CPU / path's; HTTP server's own work in neither)")
    share = shares(results)
    for path in ORDER:
        row = results[path]
        extra = f"{100 * share[path]:13.1f}%" if path in share else ""
        if path == "events":
            extra += "  (with its dispatch)"
        print(f"  {path:<12} {row['cpu_ms']:8.2f} {row['median_ms']:8.2f} "
              f"{row['statements']:6.1f} {extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL; a scratch database is made next "
                                           "to it (else a temporary SQLite file)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="SQLite, 5 requests: a smoke run")
    args = parser.parse_args()
    requests, warm = (5, 2) if args.quick else (args.requests, 30)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.postgres and not args.quick:
            url = _scratch(args.postgres, "careloop_server_cpu")
        else:
            url = f"sqlite:///{tmp / 'cpu.db'}"
        results = run(url, tmp, requests, warm)
    results["shares"] = shares(results)
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 0


def _scratch(url: str, name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    sys.exit(main())
