"""``bench/load.py`` stays runnable and measures what it says: every path answers under load
without a failure and the events the API acknowledged are all handled afterwards; its own HTTP
client (``bench/loadgen.py``) reads Content-Length and chunked answers, keeps the cookies a
server sets and counts 4xx answers as failures; a cell split over worker processes reports the
generator's CPU; a subset of paths brings the peers its shares need (no timing is asserted)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load() -> Iterator[ModuleType]:
    # imported by its own name from bench/, as `python bench/load.py` runs it (and load.py
    # imports bench/loadgen.py so): its worker processes (spawned) import them again from the
    # same sys.path
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import load as module

        yield module
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.fixture(scope="module")
def loadgen(load: ModuleType) -> ModuleType:
    return sys.modules["loadgen"]


def test_load_bench_quick_measures_every_path_and_drains_the_queue(
        engine: Engine, tmp_path: Path, load: ModuleType) -> None:
    (result,) = load.quick(tmp_path, connections=(2,), seconds=0.3).values()

    assert set(result["cells"]) == set(load.PATHS)
    for path, (cell,) in result["cells"].items():
        assert cell["requests"] > 0 and cell["failures"] == 0, (path, cell.get("first_failure"))
    assert set(result["ratios"]) == {"events", "submission", "inbox", "patient_360"}
    assert result["queue"]["pending_after"] == 0 and result["queue"]["parked"] == 0


def _echo_app() -> Any:
    app = FastAPI()

    @app.get("/chunked")
    def chunked() -> StreamingResponse:  # no Content-Length: Transfer-Encoding: chunked
        return StreamingResponse(iter([b"a" * 70000, b"", b"b" * 3, b"c" * 5000]))

    @app.post("/cookie")
    def cookie(response: Response) -> dict[str, str]:
        response.set_cookie("session", "s3cret", httponly=True)
        return {"set": "session"}

    @app.get("/whoami")
    def whoami(request: Request) -> Response:
        who = request.cookies.get("session")
        return Response(who or "nobody", status_code=200 if who else 401)

    return app


def test_raw_client_reads_chunked_and_sized_answers_and_keeps_cookies(
        load: ModuleType, loadgen: ModuleType) -> None:
    async def go(base: str) -> list[tuple[int, bytes]]:
        async with loadgen.RawClient(base, 1) as client:
            send = await client.connection()
            answers = [await send(("GET", "/whoami", "", "", b""))]
            answers.append(await send(("POST", "/cookie", "application/json", "", b"{}")))
            answers.append(await send(("GET", "/chunked", "", "", b"")))
            answers.append(await send(("GET", "/whoami", "", "", b"")))  # same connection
            assert len(client.open) == 1
            return answers

    with load.threaded(_echo_app()) as base:
        answers = asyncio.run(go(base))

    assert answers[0] == (401, b"nobody")
    assert answers[1] == (200, b'{"set":"session"}')
    assert answers[2] == (200, b"a" * 70000 + b"b" * 3 + b"c" * 5000)
    assert answers[3] == (200, b"s3cret")


def test_cell_in_worker_processes_counts_failures_and_its_own_cpu(
        load: ModuleType, loadgen: ModuleType, tmp_path: Path) -> None:
    generator = loadgen.Generator("raw", 2)
    ctx = {"api_key": "", "links": []}
    try:
        with load.threaded(load.bare_app(f"sqlite:///{tmp_path / 'bare.db'}")) as base:
            listed = generator.cell(base, "bare_list", 3, 0.3, ctx, "t", [])
            with load.threaded(_echo_app()) as echo:  # a 401 on every request
                refused = loadgen.run_cell({"client": "raw", "base": echo, "path": "bare_list",
                                         "run": "t", "connections": 1, "seconds": 0.1})
    finally:
        generator.close()

    assert listed["requests"] > 0 and listed["failures"] == 0, listed.get("first_failure")
    assert listed["connections"] == 3 and "client_cpu" in listed and listed["client_us"] > 0
    assert refused["latencies"] and len(refused["failures"]) == len(refused["latencies"])
    assert refused["failures"][0].startswith("404")  # /list is not the echo app's


def test_a_subset_of_paths_brings_its_peers(load: ModuleType) -> None:
    assert load.with_peers(["submission"]) == ("submission", "bare_insert")
    assert load.with_peers(["inbox", "events"]) == ("events", "inbox", "bare_insert",
                                                    "bare_list")
    with pytest.raises(SystemExit):
        load.with_peers(["inbx"])


def test_submission_target_needs_every_run(load: ModuleType,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def run(share: float) -> dict[str, list[dict[str, Any]]]:
        return {"submission": [{"connections": 16, "per_second": share * 100}],
                "bare_insert": [{"connections": 16, "per_second": 100.0}]}

    load.submission_target({"cells": run(0.6), "runs": [run(0.6), run(0.55), run(0.49)]})
    assert "60 %, 55 %, 49 %; ≥ 50 % in all 3: no" in capsys.readouterr().out
    load.submission_target({"cells": run(0.6), "runs": [run(0.6), run(0.5)]})
    assert "≥ 50 % in all 2: yes" in capsys.readouterr().out
