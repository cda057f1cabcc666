"""Form engine benchmarks, peers measured in the same run.

(a) Validating, evaluating visibility and scoring PHQ-9 submissions: Careloop's form engine vs.
    SurveyJS ``survey-core`` (Node; installed from npm into bench/node/ by this script) on the
    same answer sets. Target: ≥ 50× faster per submission.
(b) The whole HTTP submission path (validate, score, rules/flows event handlers, events, persist)
    vs. a bare FastAPI endpoint that only inserts the same JSON row, both served by uvicorn on
    loopback under the same concurrent load. Target: ≥ 50 % of the bare endpoint's throughput.

    python bench/forms.py [--quick] [--json] [--no-http]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "node"
PHQ9 = ROOT / "app_definitions/mental_health/forms/phq9.yaml"
INPATIENT = ROOT / "app_definitions/satisfaction/forms/inpatient_satisfaction.yaml"
# The same conditional question both engines evaluate (SurveyJS: visibleIf "{q9} > 0").
NOTE_FIELD = {"key": "note", "type": "long_text",
              "visible_if": "answers.q9 != None and answers.q9 != '0'",
              "label": {"zh-CN": "请说明", "en": "Please tell us more"}}


def answer_sets(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    sets = []
    for i in range(n):
        answers: dict[str, Any] = {f"q{k}": str(rng.randint(0, 3)) for k in range(1, 10)}
        if i % 10 == 0:
            del answers[f"q{rng.randint(1, 9)}"]  # some invalid submissions
        sets.append(answers)
    return sets


def phq9_text() -> str:
    import yaml

    body = yaml.safe_load(PHQ9.read_text("utf-8"))
    body["fields"].append(NOTE_FIELD)
    return json.dumps(body, ensure_ascii=False)


def bench_careloop(sets: list[dict[str, Any]], rounds: int) -> dict[str, float]:
    from careloop.forms.logic import evaluate
    from careloop.forms.testing import form_from_yaml

    spec = form_from_yaml(phq9_text(), "phq9.yaml")
    for answers in sets[:200]:
        evaluate(spec, answers)
    start = time.perf_counter()
    check = 0.0
    for _ in range(rounds):
        for answers in sets:
            result = evaluate(spec, answers)
            if result.valid:
                check += result.scores.get("total") or 0
    seconds = time.perf_counter() - start
    n = rounds * len(sets)
    return {"n": n, "seconds": seconds, "per_second": n / seconds, "check": check}


def ensure_surveyjs() -> None:
    if (NODE_DIR / "node_modules/survey-core").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed for the SurveyJS peer (apt-get install nodejs npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                   stdout=subprocess.DEVNULL)


def bench_surveyjs(sets: list[dict[str, Any]], rounds: int) -> dict[str, float]:
    ensure_surveyjs()
    node = shutil.which("node") or "node"
    done = subprocess.run([node, str(NODE_DIR / "phq9_surveyjs.js")], check=True,
                          input=json.dumps({"sets": sets, "rounds": rounds}),
                          capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- (b) HTTP ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def bare_app() -> Any:
    """A bare FastAPI endpoint that only inserts the posted JSON row (the peer)."""
    from fastapi import FastAPI
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine, insert

    url = os.environ["BENCH_BARE_DB"]
    engine = create_engine(url)
    meta = MetaData()
    table = Table("submissions", meta, Column("id", Integer, primary_key=True),
                  Column("form_key", String(64)), Column("patient_id", String(64)),
                  Column("answers", JSON))
    meta.create_all(engine)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    app = FastAPI()

    @app.post("/api/v1/forms/{key}/submissions", status_code=201)
    async def post(key: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        with engine.begin() as conn:
            new_id = conn.execute(insert(table).values(
                form_key=key, patient_id=body["patient_id"], answers=body["answers"])
            ).inserted_primary_key
        return {"submission_id": new_id[0] if new_id else None}

    return app


def prepare_careloop(folder: Path) -> dict[str, str]:
    from careloop.engine.db import make_engine, transaction
    from careloop.engine.domain import Patient
    from careloop.engine.migrate import upgrade
    from careloop.forms.publish import publish_form

    url = f"sqlite:///{folder / 'careloop.db'}"
    engine = make_engine(url)
    upgrade(engine)
    from careloop.web import admin

    with transaction(engine) as session:
        publish_form(session, INPATIENT.read_text("utf-8"), source_path=str(INPATIENT),
                     actor="bench")
        session.add(Patient(id="p1", mrn="B1", name="bench", locale="zh-CN"))
        user = admin.create_user(session, username="bench_nurse", display_name="bench",
                                 password=PASSWORD)
        admin.grant(session, user, "followup_agent", None)
    engine.dispose()
    return {"CARELOOP_DATABASE_URL": url, "CARELOOP_HOME": str(folder)}


def serve(target: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=str(Path(__file__).resolve().parent),
                            env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).parent)})
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=0.5)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{target} did not start")


PASSWORD = "Bench-Horse-Battery-9"


def sign_in(port: int) -> tuple[dict[str, str], dict[str, str]]:
    """Cookies and headers of a signed-in staff session (the staff API needs one)."""
    import re

    import httpx

    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as client:
        page = client.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if match is None:
            raise SystemExit("no login form")
        done = client.post("/login", data={"username": "bench_nurse", "password": PASSWORD,
                                           "csrf_token": match.group(1), "next": "/"})
        if done.status_code >= 400:
            raise SystemExit(f"sign-in failed: HTTP {done.status_code}")
        token = client.get("/api/v1/me").json()["csrf_token"]
        return dict(client.cookies), {"x-csrf-token": token}


def load(port: int, n: int, concurrency: int,
         auth: tuple[dict[str, str], dict[str, str]] = ({}, {})) -> dict[str, float]:
    import httpx

    body = {"patient_id": "p1", "answers": {"overall": 4, "nps": 9,
                                            "touchpoints": {"food": "4", "nursing": "5"},
                                            "comment": "护士很耐心"}}
    url = f"http://127.0.0.1:{port}/api/v1/forms/inpatient_satisfaction/submissions"
    counter = iter(range(n))
    lock = threading.Lock()
    failures: list[int] = []

    def worker() -> None:
        with httpx.Client(timeout=30, cookies=auth[0], headers=auth[1]) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                response = client.post(url, json=body)
                if response.status_code != 201:
                    failures.append(response.status_code)
                    if len(failures) == 1:
                        print(response.text[:500], file=sys.stderr)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} failed requests, e.g. HTTP {failures[0]}")
    return {"n": n, "seconds": seconds, "per_second": n / seconds}


def bench_http(n: int, concurrency: int) -> tuple[dict[str, float], dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = prepare_careloop(folder)
        careloop_proc, careloop_port = serve("careloop.web.app:create_app", env)
        bare_proc, bare_port = serve("forms:bare_app",
                                     {"BENCH_BARE_DB": f"sqlite:///{folder / 'bare.db'}"})
        try:
            auth = sign_in(careloop_port)
            load(careloop_port, min(50, n), concurrency, auth)  # warm-up
            load(bare_port, min(50, n), concurrency)
            careloop = load(careloop_port, n, concurrency, auth)
            bare = load(bare_port, n, concurrency)
        finally:
            for proc in (careloop_proc, bare_proc):
                proc.terminate()
                proc.wait(timeout=10)
    return careloop, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny N (smoke test)")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--no-http", action="store_true", help="only (a), the PHQ-9 part")
    args = parser.parse_args()
    sets = answer_sets(50 if args.quick else 1000)
    rounds = 1 if args.quick else 5
    ours = bench_careloop(sets, rounds)
    peer = bench_surveyjs(sets, rounds)
    n_http = 20 if args.quick else 2000
    concurrency = 4 if args.quick else 16
    http_ours, http_bare = ({"per_second": 0.0}, {"per_second": 1.0}) if args.no_http \
        else bench_http(n_http, concurrency)
    result: dict[str, Any] = {
        "bench": "forms",
        "phq9": {"careloop_per_s": round(ours["per_second"], 1),
                 "surveyjs_per_s": round(peer["per_second"], 1),
                 "ratio": round(ours["per_second"] / peer["per_second"], 2),
                 "n": ours["n"], "same_totals": ours["check"] == peer["check"]},
        "http": {"careloop_per_s": round(http_ours["per_second"], 1),
                 "bare_per_s": round(http_bare["per_second"], 1),
                 "share_of_bare": round(http_ours["per_second"] / http_bare["per_second"], 3),
                 "n": n_http, "concurrency": concurrency},
    }
    if args.no_http:
        del result["http"]
    if args.json:
        print(json.dumps(result))
        return
    phq = result["phq9"]
    print(f"(a) PHQ-9 validate+visibility+score, {phq['n']} submissions")
    print(f"    careloop  {phq['careloop_per_s']:>10} /s")
    print(f"    surveyjs  {phq['surveyjs_per_s']:>10} /s   (survey-core in Node)")
    print(f"    ratio     {phq['ratio']:>10} x   (target >= 50x); same totals: "
          f"{phq['same_totals']}")
    if args.no_http:
        return
    http = result["http"]
    print(f"(b) HTTP submission path, {http['n']} requests, concurrency {http['concurrency']}")
    print(f"    careloop  {http['careloop_per_s']:>10} /s   (validate, score, events, persist)")
    print(f"    bare      {http['bare_per_s']:>10} /s   (FastAPI insert only)")
    print(f"    share     {http['share_of_bare']:>10}     (target >= 0.5)")


if __name__ == "__main__":
    main()
