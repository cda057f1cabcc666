"""One author cannot freeze the server: each payload of issue 14 (part 3) through the real HTTP
route of a live server (uvicorn in a thread), with ``/healthz`` probed concurrently.

Each payload must get a located 4xx (code naming the limit, file:line:col) within a few seconds,
and ``/healthz`` must answer with p99 < 200 ms meanwhile. On the old code the rule try-it took
12.8 s, the alias-bomb draft 31 s, the flow ``set`` step 45.7 s; the deep bundle was a 500 or a
reset connection, the lying zip a 500.
"""

from __future__ import annotations

import io
import socket
import statistics
import struct
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Encounter, Patient, User
from careloop.engine.models import DefinitionRow
from careloop.engine.registry import loaded_registry
from careloop.web import admin
from careloop.web.app import create_app
from careloop.web.builder_models import BuilderDraft

# Latency and elapsed-time assertions: run alone, never beside a parallel worker (.ci/test).
pytestmark = pytest.mark.serial

PASSWORD = "Correct-Horse-Battery-9"
P99_MS = 200.0
ANSWER_WITHIN_S = 5.0

MANIFEST = ("id: bounds_lab\nname: {zh-CN: 限制实验, en: Limits lab}\nversion: 0.1.0\nformat: 1\n"
            "default_locale: zh-CN\neditors:\n  - {role: px_office}\n")

RULESET_WITH_POWER = """kind: ruleset
key: bounds_try
title: {zh-CN: 限制试运行, en: Limits try-it}
on: [form.submitted]
hit_policy: all
rules:
  - key: huge_number
    title: {zh-CN: 大数, en: Huge number}
    when: "1 == 1"
    then:
      - do: create_task
        title: "{{ (7**9999999) % 10 }}"
        assignee: {role: px_office}
        due: {hours: 2}
"""

ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
    'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n'
    'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n')

FORM = """kind: form
key: bounds_check
title: {zh-CN: 限制检查, en: Limits check}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
"""

FLOW_WITH_REPETITION = """kind: flow
key: bounds_set
title: {zh-CN: 设置变量, en: Set values}
trigger: {event: form.submitted, when: "event.form == 'bounds_check'"}
steps:
  - key: grow
    type: set
    set: {grid: "[[1]*5000]*5000"}
  - key: done
    type: end
"""


def _zip(files: dict[str, str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def deep_bundle(depth: int = 50_000) -> bytes:
    """A bundle whose form nests 50,000 lists (stored uncompressed: no ratio to trip on)."""
    deep = "kind: form\nkey: deep\nx: " + "[" * depth + "]" * depth + "\n"
    return _zip({"app.yaml": MANIFEST, "forms/deep.yaml": deep}, zipfile.ZIP_STORED)


def lying_bundle() -> bytes:
    """A zip whose entry declares 100 bytes but holds 200 KB."""
    body = "kind: template\nkey: liar\n# " + "a" * 200_000 + "\n"
    data = bytearray(_zip({"app.yaml": MANIFEST, "templates/liar.yaml": body}))
    local = data.find(b"PK\x03\x04", data.find(b"PK\x03\x04") + 1)
    struct.pack_into("<I", data, local + 22, 100)
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)
    return bytes(data)


def list_bomb_bundle(items: int = 2_000_000) -> bytes:
    """A few KB of zip that expands to a list of two million items."""
    text = "kind: form\nkey: big\nx: [" + "1," * items + "1]\n"
    return _zip({"app.yaml": MANIFEST, "forms/big.yaml": text})


# --- a live server and a /healthz probe --------------------------------------------------------


@pytest.fixture
def server(engine: Engine) -> Iterator[str]:
    with transaction(engine) as session:
        user = admin.create_user(session, username="author", display_name="author",
                                 password=PASSWORD)
        admin.grant(session, user, "px_office", None)
        # bundles are imported by the system administrator (separation of duties: not the author)
        importer = admin.create_user(session, username="importer", display_name="importer",
                                     password=PASSWORD)
        admin.grant(session, importer, "system_admin", None)
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.add(Patient(id="p1", mrn="MRN001", name="测试患者", phone="13800138000",
                            locale="zh-CN"))
        session.flush()
        session.add(Encounter(id="e1", patient_id="p1", type="inpatient", department_id="cardio",
                              status="discharged", discharged_at=now_utc()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _signed_in(server: str, username: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120) as client:
        page = client.get("/login").text
        csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/login", data={"username": username, "password": PASSWORD,
                                             "csrf_token": csrf, "next": "/"})
        assert signed.status_code in (200, 303), signed.text
        client.headers["X-CSRF-Token"] = client.get("/api/v1/me").json()["csrf_token"]
        yield client


@pytest.fixture
def author(server: str) -> Iterator[httpx.Client]:
    yield from _signed_in(server, "author")


@pytest.fixture
def importer(server: str) -> Iterator[httpx.Client]:
    yield from _signed_in(server, "importer")


def under_probe(server: str, call: Callable[[], httpx.Response]) -> tuple[httpx.Response,
                                                                          float, list[float]]:
    """``call()`` while another thread GETs ``/healthz`` every 20 ms (for at least a second):
    the response, how long it took (s) and the probe's latencies (ms).

    The machine is shared (load averages of 10 on 2 cores are common), so one stall of the
    whole host can put any request over 200 ms: when the p99 is over, the payload is sent once
    more (up to three times) and the best window counts. A server that blocks on the payload
    fails every one (on the old code every window held multi-second stalls)."""
    best: tuple[httpx.Response, float, list[float]] | None = None
    for _ in range(3):
        measured = _probe_once(server, call)
        if best is None or _p99_or_inf(measured[2]) < _p99_or_inf(best[2]):
            best = measured
        if _p99_or_inf(best[2]) < P99_MS:
            break
    assert best is not None
    return best


def _probe_once(server: str, call: Callable[[], httpx.Response]) -> tuple[httpx.Response,
                                                                          float, list[float]]:
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server, timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append((time.perf_counter() - started) * 1000)
                stop.wait(0.02)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.1)
    started = time.perf_counter()
    try:
        response = call()
    finally:
        elapsed = time.perf_counter() - started
        time.sleep(max(0.1, 1.0 - elapsed))
        stop.set()
        thread.join(timeout=70)
    return response, elapsed, latencies


def _p99_or_inf(latencies: list[float]) -> float:
    return p99(latencies) if len(latencies) >= 5 else float("inf")


def p99(latencies: list[float]) -> float:
    assert len(latencies) >= 5, latencies
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


def assert_located_refusal(response: httpx.Response, elapsed: float, latencies: list[float],
                           code: str, file_part: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text[:500]
    assert elapsed < ANSWER_WITHIN_S, f"answered after {elapsed:.1f} s"
    assert p99(latencies) < P99_MS, f"/healthz p99 {p99(latencies):.0f} ms: {latencies}"
    body = response.json()
    assert body["code"] == code, body
    [problem] = body["problems"]
    assert problem["code"] == code and file_part in problem["file"], problem
    assert problem["line"] >= 1 and problem["column"] >= 1, problem
    if code != "bundle.zip-size-mismatch":  # a lie is not a limit; every other refusal is
        assert "limit:" in problem["message"], problem
    assert "Traceback" not in response.text
    result: dict[str, Any] = problem
    return result


# --- the payloads ------------------------------------------------------------------------------


def test_power_in_a_rule_try_it(server: str, author: httpx.Client) -> None:
    response, elapsed, latencies = under_probe(server, lambda: author.post(
        "/api/v1/builder/rules/bounds_try/try",
        json={"text": RULESET_WITH_POWER, "event": {"type": "form.submitted",
                                                    "payload": {"answers": {}}}}))
    problem = assert_located_refusal(response, elapsed, latencies, "template.too-large",
                                     "rules/bounds_try.yaml")
    # at the title of the rule's first action, where the template is written
    assert (problem["line"], problem["path"]) == (12, "$.rules[0].then[0].title")
    assert "**" in problem["message"]


@pytest.fixture
def lab_app(importer: httpx.Client) -> str:
    """The app the author edits, imported through the API."""
    imported = importer.post("/api/v1/builder/import?apply=true",
                           content=_zip({"app.yaml": MANIFEST, "forms/bounds_check.yaml": FORM}))
    assert imported.status_code == 200, imported.text
    return "bounds_lab"


def test_alias_bomb_saved_as_a_draft(server: str, author: httpx.Client, engine: Engine,
                                     lab_app: str) -> None:
    response, elapsed, latencies = under_probe(server, lambda: author.put(
        "/api/v1/builder/drafts/form/bomb", json={"text": ALIAS_BOMB, "app": lab_app}))
    assert_located_refusal(response, elapsed, latencies, "source.too-many-nodes",
                           "forms/bomb.yaml")
    for route in ("validate", "diff", "publish"):  # every way in refuses it the same way
        refused = author.post(f"/api/v1/builder/{route}/form/bomb",
                              json={"text": ALIAS_BOMB, "app": lab_app})
        assert (refused.status_code, refused.json()["code"]) == (422, "source.too-many-nodes")
        assert refused.json()["problems"][0]["line"] == 1
    with transaction(engine) as session:  # refused before anything was stored
        assert session.scalars(select(BuilderDraft)).all() == []
        assert session.scalars(select(DefinitionRow).where(DefinitionRow.key == "bomb")).all() \
            == []


def test_editor_opening_a_stored_bomb_draft_is_bounded(server: str, author: httpx.Client,
                                                       engine: Engine, lab_app: str) -> None:
    """A bomb saved by the old code is not re-expanded each time the editor opens."""
    with transaction(engine) as session:
        user_id = session.scalars(select(User.id).where(User.username == "author")).one()
        session.add(BuilderDraft(user_id=user_id, app_id=lab_app, kind="form", key="bomb",
                                 text=ALIAS_BOMB, updated_at=now_utc()))
    response, elapsed, latencies = under_probe(
        server, lambda: author.get("/api/v1/builder/drafts/form/bomb"))
    assert response.status_code == 200 and elapsed < ANSWER_WITHIN_S
    assert p99(latencies) < P99_MS
    body = response.json()
    assert body["yaml"] == ALIAS_BOMB  # the author's text is kept and shown, with the problem
    assert [p["code"] for p in body["problems"]][:1] == ["source.too-many-nodes"]


def test_repetition_in_a_flow_set_step_of_a_form_submission(server: str, importer: httpx.Client,
                                                             engine: Engine) -> None:
    bundle = _zip({"app.yaml": MANIFEST, "forms/bounds_check.yaml": FORM,
                   "flows/bounds_set.yaml": FLOW_WITH_REPETITION})
    imported = importer.post("/api/v1/builder/import?apply=true", content=bundle)
    assert imported.status_code == 200, imported.text
    create = loaded_registry().catalogue("service")["forms.create_request"]

    def submit() -> httpx.Response:
        with transaction(engine) as session:
            made = create(session, form_key="bounds_check", patient_id="p1", encounter_id="e1",
                          channel="sms", expires_at=now_utc() + timedelta(days=7))
        with httpx.Client(base_url=server, timeout=120) as patient:
            answered = patient.post(made["url"], data={"_page": "0", "_lang": "zh-CN",
                                                       "_action": "submit", "ok": "yes"})
        drain(engine)  # the flow runs from the queue, in the server's process, while probed
        return answered

    response, elapsed, latencies = under_probe(server, submit)
    # the patient's answers are kept and thanked for; the flow step is refused, located
    assert response.status_code == 200, response.text[:300]
    assert "感谢您的填写" in response.text  # forms.page.thanks
    assert elapsed < ANSWER_WITHIN_S, f"answered after {elapsed:.1f} s"
    assert p99(latencies) < P99_MS, latencies
    from careloop.flows.models import StepRun

    with transaction(engine) as session:
        failed = session.scalars(select(StepRun).where(StepRun.error.is_not(None))).all()
        assert failed and {f.step_key for f in failed} == {"grow"}
        assert all("expr.too-large" in (f.error or "") and "set.grid" in (f.error or "")
                   for f in failed)


def test_stored_rule_set_with_the_power_template(server: str, author: httpx.Client,
                                                 importer: httpx.Client,
                                                 engine: Engine) -> None:
    """The same template published (a bundle accepts it: it is valid Jinja): the rule test
    endpoint refuses it located in the stored version, and a real submission that fires the
    rule keeps the patient's answers and records the rule's failure instead of hanging."""
    bundle = _zip({"app.yaml": MANIFEST, "forms/bounds_check.yaml": FORM,
                   "rules/bounds_try.yaml": RULESET_WITH_POWER})
    imported = importer.post("/api/v1/builder/import?apply=true", content=bundle)
    assert imported.status_code == 200, imported.text
    response, elapsed, latencies = under_probe(server, lambda: author.post(
        "/api/v1/rules/bounds_try/test", json={"type": "form.submitted",
                                               "payload": {"form": "bounds_check"}}))
    problem = assert_located_refusal(response, elapsed, latencies, "template.too-large",
                                     "ruleset/bounds_try@v1")
    assert (problem["line"], problem["path"]) == (12, "$.rules[0].then[0].title")

    create = loaded_registry().catalogue("service")["forms.create_request"]
    with transaction(engine) as session:
        made = create(session, form_key="bounds_check", patient_id="p1", encounter_id="e1",
                      channel="sms", expires_at=now_utc() + timedelta(days=7))
    started = time.perf_counter()
    with httpx.Client(base_url=server, timeout=120) as patient:
        posted = patient.post(made["url"], data={"_page": "0", "_lang": "zh-CN",
                                                 "_action": "submit", "ok": "yes"})
    assert posted.status_code == 200 and "感谢您的填写" in posted.text
    assert time.perf_counter() - started < ANSWER_WITHIN_S
    drain(engine)  # the rule set runs from the queue
    from careloop.rules.models import RuleEvaluation

    with transaction(engine) as session:
        [evaluation] = session.scalars(select(RuleEvaluation).where(
            RuleEvaluation.ruleset_key == "bounds_try")).all()
        assert "template.too-large" in (evaluation.error or "")


@pytest.mark.parametrize(("make", "code", "member"), [
    (deep_bundle, "source.too-deep", "forms/deep.yaml"),
    (lying_bundle, "bundle.zip-size-mismatch", "templates/liar.yaml"),
    (list_bomb_bundle, "bundle.zip-ratio", "forms/big.yaml"),
], ids=["deep-yaml", "lying-header", "list-bomb"])
def test_bundle_payloads(server: str, importer: httpx.Client, make: Callable[[], bytes], code: str,
                         member: str) -> None:
    data = make()
    response, elapsed, latencies = under_probe(
        server, lambda: importer.post("/api/v1/builder/import", content=data))
    if code.startswith("source."):  # a parsed member's problem: the plan's located errors
        assert response.status_code == 422 and elapsed < ANSWER_WITHIN_S, response.text[:300]
        assert p99(latencies) < P99_MS, latencies
        errors = response.json()["errors"]
        assert [e["code"] for e in errors] == [code]
        assert errors[0]["file"].endswith(member) and errors[0]["line"] == 3
    else:
        assert_located_refusal(response, elapsed, latencies, code, member)


def test_bench_script_runs() -> None:
    """bench/healthz_under_load.py stays runnable (one round; no timing asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "healthz_under_load.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    payloads = data["payloads"]
    assert set(payloads) == {"rule_try_power", "draft_alias_bomb", "flow_set_repetition",
                             "bundle_deep_yaml", "bundle_lying_header", "bundle_list_bomb"}
    assert all(run["status"] in (200, 422) for runs in payloads.values() for run in runs)
