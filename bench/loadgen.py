"""The load generator of bench/load.py: raw HTTP/1.1 on keep-alive connections, in worker
processes.

A request is (method, target, content type, extra headers, body), the same for every client.
The default client ("raw", ``RawClient``) writes each request's HTTP/1.1 bytes on its own
keep-alive connection (an asyncio Protocol, uvloop when installed) and reads the answer with a
minimal parser (status, Content-Length or chunked body, Set-Cookie): a few tens of microseconds
of CPU a request, where httpx's pool costs about a millisecond with many connections. "aiohttp"
and "httpx" stay selectable (``--client``) to compare. ``Generator`` drives each cell from
``--client-processes`` separate processes (spawned; they import this module by its name from
bench/), so the generator shares no interpreter with the bench's own bookkeeping; every cell
reports the generator's CPU (and the servers', read from /proc) so a reader sees whether the
generator was the bottleneck. ``requests_for`` says what each path of the bench sends;
``sign_in`` opens the nurse's staff session through the login form (its CSRF token).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

PASSWORD = "Correct-Horse-Battery-9"  # the nurse bench/load.py prepares signs in with it

Request = tuple[str, str, str, str, bytes]
CLIENTS = ("raw", "aiohttp", "httpx")


class Failure(Exception):
    """A connection dropped or an answer that could not be read."""


class _Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: ``send`` writes a request and waits for its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: tuple[int, int | None, bool, list[bytes]] | None = None
        self.waiter: asyncio.Future[tuple[int, list[bytes], bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if self.head is not None and self.head[1] is None and not self.head[2]:
                waiter.set_result((self.head[0], self.head[3], bytes(self.buffer)))  # to close
            else:
                waiter.set_exception(Failure(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            del self.buffer[:end + 4]
            status, length, chunked, cookies = int(lines[0][9:12]), None, False, []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"set-cookie":
                    cookies.append(value.strip())
            if length is None and not chunked and (status in (204, 304) or status < 200):
                length = 0
            self.head = (status, length, chunked, cookies)
        status, length, chunked, cookies = self.head
        if chunked:
            body = self._dechunk()
            if body is None:
                return
        elif length is None or len(self.buffer) < length:
            return  # more to come (or, without a length, until the server closes)
        else:
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
        self.head = None
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, cookies, body))

    def _dechunk(self) -> bytes | None:
        parts, at = [], 0
        while True:
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[at:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                end = self.buffer.find(b"\r\n\r\n", line_end)  # no trailers expected
                if end < 0:
                    return None
                del self.buffer[:end + 4]
                return b"".join(parts)
            start = line_end + 2
            if len(self.buffer) < start + size + 2:
                return None
            parts.append(bytes(self.buffer[start:start + size]))
            at = start + size + 2

    async def send(self, data: bytes) -> tuple[int, list[bytes], bytes]:
        if self.lost or self.transport is None:
            raise Failure("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class RawClient:
    """Connections of ``_Http``; the cookies the server set are sent on every request."""

    errors: tuple[type[BaseException], ...] = (Failure, OSError)

    def __init__(self, base: str, connections: int) -> None:
        hostport = base.split("://", 1)[1].rstrip("/")
        self.host, _, port = hostport.partition(":")
        self.port, self.hostport = int(port or 80), hostport
        self.cookies: dict[str, str] = {}
        self.open: list[_Http] = []

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.open:
            if conn.transport is not None:
                conn.transport.close()

    async def connection(self) -> Callable[[Request], Any]:
        conn: _Http | None = None

        async def send(request: Request) -> tuple[int, bytes]:
            nonlocal conn
            if conn is None or conn.lost:
                conn = await self._connect()
            status, cookies, body = await conn.send(self.encode(request))
            for cookie in cookies:
                name, _, value = cookie.split(b";", 1)[0].decode("latin-1").partition("=")
                self.cookies[name.strip()] = value.strip()
            return status, body

        return send

    async def _connect(self) -> _Http:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Http, self.host, self.port)
        self.open.append(conn)
        return conn

    def encode(self, request: Request) -> bytes:
        method, target, content_type, extra, body = request
        cookie = ("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()) + "\r\n"
                  if self.cookies else "")
        typed = f"Content-Type: {content_type}\r\n" if content_type else ""
        return (f"{method} {target} HTTP/1.1\r\nHost: {self.hostport}\r\n{extra}{typed}{cookie}"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class AioClient:
    """aiohttp's client session (a pool of ``connections`` keep-alive connections)."""

    def __init__(self, base: str, connections: int) -> None:
        import aiohttp

        self.errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)
        self.base, self.connections, self.aiohttp = base, connections, aiohttp
        self.cookies: dict[str, str] = {}

    async def __aenter__(self) -> AioClient:
        aiohttp = self.aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # loopback IP: cookies allowed
            timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)
        self.session.cookie_jar.update_cookies(self.cookies)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def connection(self) -> Callable[[Request], Any]:
        async def send(request: Request) -> tuple[int, bytes]:
            method, target, content_type, extra, body = request
            headers = _headers(content_type, extra)
            async with self.session.request(method, self.base + target, headers=headers,
                                            data=body or None, allow_redirects=False) as answer:
                data = await answer.read()
                for cookie in answer.cookies.values():
                    self.cookies[cookie.key] = cookie.value
                return answer.status, data

        return send


class HttpxClient:
    """httpx's AsyncClient (the generator this bench used before: for comparison)."""

    def __init__(self, base: str, connections: int) -> None:
        import httpx

        self.errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)
        self.cookies: dict[str, str] = {}
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=base, timeout=60, limits=limits)

    async def __aenter__(self) -> HttpxClient:
        self.client.cookies.update(self.cookies)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cookies.update(dict(self.client.cookies))
        await self.client.aclose()

    async def connection(self) -> Callable[[Request], Any]:
        async def send(request: Request) -> tuple[int, bytes]:
            method, target, content_type, extra, body = request
            answer = await self.client.request(method, target, content=body or None,
                                               headers=_headers(content_type, extra))
            for name, value in answer.cookies.items():
                self.cookies[name] = value
            return answer.status_code, answer.content

        return send


def _headers(content_type: str, extra: str) -> dict[str, str]:
    headers = dict(line.split(": ", 1) for line in extra.split("\r\n") if line)
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def client_for(kind: str, base: str, connections: int) -> Any:
    return {"raw": RawClient, "aiohttp": AioClient, "httpx": HttpxClient}[kind](base, connections)


async def sign_in(client: Any) -> None:
    """The nurse's staff session through the login form (its CSRF token and cookie)."""
    send = await client.connection()
    status, page = await send(("GET", "/login", "", "", b""))
    token = page.decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = urlencode({"username": "nurse", "password": PASSWORD, "csrf_token": token,
                      "next": "/"}).encode()
    status, _ = await send(("POST", "/login", "application/x-www-form-urlencoded", "", form))
    if status != 303:
        raise RuntimeError(f"sign-in answered {status}")


def _quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def requests_for(spec: dict[str, Any]) -> Callable[[int], Request | None]:
    """Request ``n`` of a cell: ``spec`` holds the path, a run label (fresh event ids), the
    API key and the form links this cell may answer (each once)."""
    path, run, key = spec["path"], spec["run"], spec.get("api_key", "")
    links = iter(spec.get("links", ()))
    json_type, form_type = "application/json", "application/x-www-form-urlencoded"
    answers = urlencode({"_page": "0", "_lang": "zh-CN", "_action": "submit", "ok": "yes",
                         "note": "都好"}).encode()

    def event_body(n: int) -> bytes:
        return json.dumps({"event_id": f"load-{run}-{n}", "type": "patient.upserted",
                           "payload": {"patient_id": f"L{run}{n}", "mrn": f"L{run}{n}",
                                       "name": "压测患者"}}).encode()

    def submission(n: int) -> Request | None:
        link = next(links, None)
        return None if link is None else ("POST", link, form_type, "", answers)

    makers: dict[str, Callable[[int], Request | None]] = {
        "events": lambda n: ("POST", "/api/v1/events", json_type, f"X-API-Key: {key}\r\n",
                             event_body(n)),
        "submission": submission,
        "inbox": lambda n: ("GET", "/inbox", "", "", b""),
        "patient_360": lambda n: ("GET", f"/patients/p{n % 60}", "", "", b""),
        "bare_insert": lambda n: ("POST", "/insert", json_type, "", event_body(n)),
        "bare_list": lambda n: ("GET", "/list", "", "", b""),
    }
    return makers[path]


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    """One cell (or one process's share of it): ``spec["connections"]`` connections each
    sending its next request as soon as the last is answered, from ``spec["start_at"]`` (wall
    clock) for ``spec["seconds"]``. Answers of 400 and above count as failures."""
    make = requests_for(spec)
    latencies: list[float] = []
    failures: list[str] = []
    first = spec.get("first", 0)
    counter = iter(range(first, first + 10**9))
    out_of_links, made = False, 0
    async with client_for(spec["client"], spec["base"], spec["connections"]) as client:
        client.cookies.update(spec.get("cookies", {}))
        senders = [await client.connection() for _ in range(spec["connections"])]
        await asyncio.sleep(max(0.0, spec.get("start_at", 0) - time.time()))
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + spec["seconds"]

        async def one_connection(send: Callable[[Request], Any]) -> None:
            nonlocal out_of_links, made
            while True:  # at least one request each, then until the deadline
                request = make(next(counter))
                if request is None:
                    out_of_links = True
                    return
                made += 1  # (a submission's link is used even if its answer is lost)
                sent = time.perf_counter()
                try:
                    status, body = await send(request)
                except client.errors as exc:  # dropped under load: a failure, not the end
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.01)  # (a refused connection must not spin)
                else:
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if status >= 400:
                        failures.append(f"{status} {body[:200].decode(errors='replace')}")
                if sent >= deadline:
                    return

        await asyncio.gather(*(one_connection(send) for send in senders))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return {"latencies": latencies, "failures": failures, "elapsed": elapsed, "cpu": cpu,
            "links_used": made, "out_of_links": out_of_links}


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs ``_load`` on a fresh event loop (uvloop's when installed: the cheaper client)."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(spec))


def _server_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants (Linux /proc)."""
    total, seen, todo = 0.0, set(), list(pids)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


class Generator:
    """Runs cells: in this process (``pool`` None: the ``--quick`` smoke run, servers in
    threads) or split over ``processes`` worker processes (full runs)."""

    def __init__(self, client: str, processes: int) -> None:
        self.client, self.processes = client, processes
        self.pool: Any = None
        if processes:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(processes,
                                            mp_context=multiprocessing.get_context("spawn"))
            list(self.pool.map(time.sleep, [0.0] * processes))  # started before the first cell

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def cell(self, base: str, path: str, connections: int, seconds: float, ctx: dict[str, Any],
             run: str, server_pids: list[int]) -> dict[str, Any]:
        staff = path in ("inbox", "patient_360")
        cookies = dict(ctx.setdefault("cookies", {}).get(base, {})) if staff else {}
        if staff and not cookies:
            cookies = ctx["cookies"][base] = self._signed_in(base)
        links: list[str] = ctx.setdefault("unused_links", list(ctx["links"]))
        shares = [connections // max(self.processes, 1) + (1 if i < connections % max(
            self.processes, 1) else 0) for i in range(max(self.processes, 1))]
        shares = [s for s in shares if s]
        specs = [{"client": self.client, "base": base, "path": path, "run": run,
                  "connections": share, "seconds": seconds, "cookies": cookies,
                  "api_key": ctx["api_key"], "first": i * 10**8,
                  "links": links[i::len(shares)] if path == "submission" else []}
                 for i, share in enumerate(shares)]
        server_cpu = _server_cpu(server_pids)
        if self.pool is None:
            parts = [run_cell({**specs[0], "start_at": 0})]
        else:
            start_at = time.time() + 0.3  # every process starts its share together
            parts = list(self.pool.map(run_cell, [{**s, "start_at": start_at} for s in specs]))
        server_cpu = _server_cpu(server_pids) - server_cpu
        if path == "submission":
            taken = {link for spec, part in zip(specs, parts, strict=True)
                     for link in spec["links"][:part["links_used"]]}
            ctx["unused_links"] = [link for link in links if link not in taken]
        latencies = [ms for part in parts for ms in part["latencies"]]
        failures = [f for part in parts for f in part["failures"]]
        elapsed = max(part["elapsed"] for part in parts)
        cpu = sum(part["cpu"] for part in parts)
        cell = {"connections": connections, "requests": len(latencies),
                "failures": len(failures),
                "per_second": round(len(latencies) / elapsed, 1),
                "p50_ms": round(_quantile(latencies, 50), 1),
                "p95_ms": round(_quantile(latencies, 95), 1),
                "p99_ms": round(_quantile(latencies, 99), 1),
                # the generator's CPU: a share of one core, and per request
                **({"client_cpu": round(cpu / elapsed, 3),
                    "client_us": round(cpu / max(len(latencies), 1) * 1e6)}
                   if self.pool is not None else {}),  # in-process: the servers' CPU too
                **({"server_cpu": round(server_cpu / elapsed, 3),
                    "server_us": round(server_cpu / max(len(latencies), 1) * 1e6)}
                   if server_pids else {}),
                **({"first_failure": failures[0]} if failures else {}),
                **({"out_of_links": True} if any(p["out_of_links"] for p in parts) else {})}
        return cell

    def _signed_in(self, base: str) -> dict[str, str]:
        client = RawClient(base, 1)

        async def go() -> dict[str, str]:
            async with client:
                await sign_in(client)
            return client.cookies

        return asyncio.run(go())
