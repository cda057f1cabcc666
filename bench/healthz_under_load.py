"""``/healthz`` latency while one author sends each payload of issue 14 (part 3).

A live server (uvicorn in a thread, SQLite in a temporary folder); a probe thread GETs
``/healthz`` every 20 ms. For each payload: the probe's p99 over an idle window (without) and
while the payload is sent (with), and the payload's status, code and time. The peer is the same
server idle: the point is that an author's payload does not move the p99.

    python bench/healthz_under_load.py [--quick] [--json] [--rounds N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

PASSWORD = "Correct-Horse-Battery-9"
MANIFEST = ("id: bounds_lab\nname: {zh-CN: 限制实验, en: Limits lab}\nversion: 0.1.0\nformat: 1\n"
            "default_locale: zh-CN\n")
RULESET = """kind: ruleset
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
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n"
                  for p, n in zip("abcdefgh", "bcdefghi", strict=True)))
FORM = """kind: form
key: bounds_check
title: {zh-CN: 限制检查, en: Limits check}
default_locale: zh-CN
fields:
  - {key: ok, type: yes_no, label: {zh-CN: 还好吗？, en: "All well?"}}
"""
FLOW = """kind: flow
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


def _lying_zip() -> bytes:
    data = bytearray(_zip({"app.yaml": MANIFEST,
                           "templates/liar.yaml": "kind: template\n# " + "a" * 200_000}))
    struct.pack_into("<I", data, data.find(b"PK\x03\x04", data.find(b"PK\x03\x04") + 1) + 22, 100)
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 100)
    return bytes(data)


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _window(server: str, call: Callable[[], Any] | None, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server, timeout=120) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get("/healthz")
                latencies.append((time.perf_counter() - started) * 1000)
                stop.wait(0.02)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.1)
    started = time.perf_counter()
    outcome: dict[str, Any] = {}
    if call is not None:
        response = call()
        body = (response.json() if response.headers.get("content-type", "").startswith(
            "application/json") else {})
        errors = body.get("errors") or [{}]  # a bundle's located problems, or one refusal
        outcome = {"status": response.status_code, "code": body.get("code") or errors[0].get(
            "code")}
    elapsed = time.perf_counter() - started
    time.sleep(max(0.1, seconds - elapsed))
    stop.set()
    thread.join(timeout=130)
    return {**outcome, "seconds": round(elapsed, 3), "p99_ms": round(_p99(latencies), 1),
            "samples": len(latencies)}


def run(rounds: int, only: list[str] | None = None) -> dict[str, Any]:
    import httpx
    import uvicorn

    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department, Encounter, Patient
    from careloop.engine.migrate import upgrade
    from careloop.engine.registry import loaded_registry
    from careloop.web import admin
    from careloop.web.app import create_app

    upgrade()
    with transaction() as session:
        user = admin.create_user(session, username="author", display_name="author",
                                 password=PASSWORD)
        admin.grant(session, user, "px_office", None)
        # bundles are imported by the system administrator (separation of duties: not the author)
        importer = admin.create_user(session, username="importer", display_name="importer",
                                     password=PASSWORD)
        admin.grant(session, importer, "system_admin", None)
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.add(Patient(id="p1", mrn="MRN001", name="测试患者", phone="13800138000"))
        session.flush()
        session.add(Encounter(id="e1", patient_id="p1", type="inpatient", department_id="cardio",
                              status="discharged", discharged_at=now_utc()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"

    def signed_in(username: str) -> httpx.Client:
        c = httpx.Client(base_url=base, timeout=300)
        token = c.get("/login").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token,
                               "next": "/"})
        c.headers["X-CSRF-Token"] = c.get("/api/v1/me").json()["csrf_token"]
        return c

    client = signed_in("author")
    importer = signed_in("importer")
    importer.post("/api/v1/builder/import?apply=true",
                content=_zip({"app.yaml": MANIFEST, "forms/bounds_check.yaml": FORM,
                              "flows/bounds_set.yaml": FLOW}))
    create = loaded_registry().catalogue("service")["forms.create_request"]

    def submit() -> Any:
        with transaction() as session:
            made = create(session, form_key="bounds_check", patient_id="p1", encounter_id="e1",
                          channel="sms", expires_at=now_utc() + timedelta(days=7))
        return httpx.post(base + made["url"], timeout=300, data={
            "_page": "0", "_lang": "zh-CN", "_action": "submit", "ok": "yes"})

    deep = "kind: form\nkey: deep\nx: " + "[" * 50_000 + "]" * 50_000 + "\n"
    payloads: dict[str, Callable[[], Any]] = {
        "rule_try_power": lambda: client.post("/api/v1/builder/rules/bounds_try/try", json={
            "text": RULESET, "event": {"type": "form.submitted", "payload": {"answers": {}}}}),
        "draft_alias_bomb": lambda: client.put("/api/v1/builder/drafts/form/bomb",
                                               json={"text": BOMB, "app": "bounds_lab"}),
        "flow_set_repetition": submit,
        "bundle_deep_yaml": lambda: importer.post("/api/v1/builder/import", content=_zip(
            {"app.yaml": MANIFEST, "forms/deep.yaml": deep}, zipfile.ZIP_STORED)),
        "bundle_lying_header": lambda: importer.post("/api/v1/builder/import",
                                                   content=_lying_zip()),
        "bundle_list_bomb": lambda: importer.post("/api/v1/builder/import", content=_zip(
            {"app.yaml": MANIFEST, "forms/big.yaml": "x: [" + "1," * 2_000_000 + "1]"})),
    }
    results: dict[str, Any] = {"rounds": rounds, "payloads": {}}
    for name, call in payloads.items():
        if only and name not in only:
            continue
        runs = []
        for _ in range(rounds):
            without = _window(base, None, 1.0)
            with_payload = _window(base, call, 1.0)
            runs.append({"without_p99_ms": without["p99_ms"], **{
                f"with_{k}" if k in ("p99_ms", "samples") else k: v
                for k, v in with_payload.items()}})
        results["payloads"][name] = runs
    client.close()
    server.should_exit = True
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round (smoke test)")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", help="a payload's name (repeatable)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CARELOOP_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        os.environ["CARELOOP_HOME"] = tmp
        results = run(rounds, args.only)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    print(f"/healthz p99 (ms) without and with each payload, {rounds} round(s) of 1 s windows")
    print(f"  {'payload':<22} {'without':>8} {'with':>8}   answer")
    for name, runs in results["payloads"].items():
        for r in runs:
            print(f"  {name:<22} {r['without_p99_ms']:8.1f} {r['with_p99_ms']:8.1f}   "
                  f"{r.get('status')} {r.get('code') or ''} in {r['seconds']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
