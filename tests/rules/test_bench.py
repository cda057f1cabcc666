"""bench/rules.py stays runnable (tiny N); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_json() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "rules.py"), "--quick", "--json"],
                         capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["bench"] == "rules"
    assert {"careloop", "simpleeval (re-parse)", "hand-written"} <= set(report["evals_per_s"])
    assert report["careloop_speedup"]["careloop"] == 1.0
