"""What share of a patient's submission its event handlers take (why a patient link defers them).

Every shipped app imported (their rules and flows react to ``form.submitted``), SQLite in a
temporary folder; ``inpatient_satisfaction`` submitted N times in the caller's transaction with
the handlers run inline (``defer=False``, as before), half of the answers dissatisfied. Prints
the mean time of a submission and of its handlers (``dispatch_event``), and the share.

    python bench/submission_handlers.py [--n 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = ({"overall": 4, "nps": 9, "touchpoints": {"food": "4", "nursing": "5"},
            "comment": "护士很耐心"},
           {"overall": 1, "nps": 2, "touchpoints": {"food": "1", "nursing": "2"},
            "low_reasons": ["explanation"], "comment": "用药指导不清楚"})


def run(n: int) -> dict[str, Any]:
    from careloop.engine import events
    from careloop.engine.bundles import import_bundles, list_bundles
    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department, Encounter, Patient
    from careloop.engine.migrate import upgrade
    from careloop.forms import runtime

    upgrade()
    import_bundles(list_bundles([ROOT / "app_definitions"]), actor="bench")
    with transaction() as session:
        if session.get(Department, "cardiology") is None:
            session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
            session.flush()
        for i in range(n):
            session.add(Patient(id=f"p{i}", mrn=f"M{i}", name="患者", locale="zh-CN"))
            session.flush()
            session.add(Encounter(id=f"e{i}", patient_id=f"p{i}", type="inpatient",
                                  department_id="cardiology", status="discharged",
                                  discharged_at=now_utc()))
    spent = {"handlers": 0.0}
    inline = events.dispatch_event

    def timed(session: Any, event: Any) -> None:
        started = time.perf_counter()
        inline(session, event)
        spent["handlers"] += time.perf_counter() - started

    events.dispatch_event = timed  # the same handlers, timed
    total = 0.0
    try:
        for i in range(n):
            started = time.perf_counter()
            with transaction() as session:
                runtime.submit(session, form_key="inpatient_satisfaction",
                               answers=ANSWERS[i % 2], patient_id=f"p{i}",
                               encounter_id=f"e{i}", channel="sms")
            total += time.perf_counter() - started
    finally:
        events.dispatch_event = inline
    return {"n": n, "submission_ms": round(total / n * 1000, 1),
            "handlers_ms": round(spent["handlers"] / n * 1000, 1),
            "handlers_share": round(spent["handlers"] / total, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CARELOOP_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        result = run(args.n)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{result['n']} submissions: {result['submission_ms']} ms each, of which the "
              f"event handlers {result['handlers_ms']} ms = {result['handlers_share']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
