"""The benchmark script stays runnable (tiny N; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_forms_quick_runs_and_agrees_with_its_peer() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench/forms.py"), "--quick", "--json"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "forms"
    assert result["phq9"]["same_totals"] is True
    assert result["phq9"]["ratio"] > 0 and result["http"]["share_of_bare"] > 0
