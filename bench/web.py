"""Web runtime benchmark: the cost of the console's pages over the framework's floor.

Peers in the same run: a bare FastAPI route (``/healthz``, the floor every request pays:
middleware, CSRF and scope dependencies, headers) against the inbox (scoped SQL), the patient 360
page (scope check + audit append in the hash chain) and the task API, for a ward-scoped nurse and
a hospital-wide user, on a demo database of N patients (SQLite in a temporary folder).

    python bench/web.py [--quick] [--json] [--patients N] [--requests R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _measure(client: Any, path: str, requests: int) -> float:
    client.get(path)  # warm
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    patients, requests = (20, 5) if args.quick else (args.patients, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CARELOOP_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        results = run(patients, requests)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    floor = results["healthz_ms"]
    print(f"web runtime, {patients} demo patients, median of {requests} requests each")
    for name, value in results.items():
        if name.endswith("_ms"):
            print(f"  {name[:-3]:<28} {value:8.2f} ms   {value / floor:6.1f}x the bare route")


def run(patients: int, requests: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from careloop.engine.db import transaction
    from careloop.engine.domain import Encounter
    from careloop.engine.migrate import upgrade
    from careloop.web.app import create_app
    from careloop.web.demo import DEMO_PASSWORD, seed

    upgrade()
    seed(patients=patients)
    with transaction() as session:
        patient = session.scalars(select(Encounter.patient_id).where(
            Encounter.ward_id == "cardio_w1")).first()
    results: dict[str, Any] = {"patients": patients, "requests": requests}
    app = create_app()
    for user, label in (("cardio_w1_nurse", "ward"), ("px", "hospital")):
        with TestClient(app) as client:
            page = client.get("/login").text
            token = page.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"username": user, "password": DEMO_PASSWORD,
                                        "csrf_token": token})
            if label == "ward":
                results["healthz_ms"] = _measure(client, "/healthz", requests)
            results[f"inbox_{label}_ms"] = _measure(client, "/inbox?view=department", requests)
            results[f"api_tasks_{label}_ms"] = _measure(client, "/api/v1/tasks?view=department",
                                                        requests)
            results[f"patient_page_{label}_ms"] = _measure(client, f"/patients/{patient}",
                                                           requests)
    return results


if __name__ == "__main__":
    sys.exit(main())
