"""Smoke test: bench/reports.py --quick still runs and prints its ratios (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_prints_ratios() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reports.py"), "--quick",
                          "--json"], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "error"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == 300
    assert {"engine_vs_hand", "engine_vs_duckdb", "engine_vs_pandas",
            "cached_vs_duckdb"} <= set(result["sqlite"])
