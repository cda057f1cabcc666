"""The benchmark script stays runnable (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "web.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["patients"] == 20 and data["healthz_ms"] > 0
    assert {"inbox_ward_ms", "patient_page_hospital_ms"} <= set(data)
