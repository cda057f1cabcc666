"""Smoke test: bench/flows.py --quick --json still runs and reports both peers (no timing
assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_and_prints_one_json_line() -> None:
    command = [sys.executable, str(ROOT / "bench" / "flows.py"), "--quick", "--json",
               "--runs", "2", "--due", "10", "--pending", "200"]
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url and make_url(url).get_backend_name() == "postgresql":
        command += ["--pg", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert set(result["discharge_ms"]) == {"careloop", "spiffworkflow",
                                           "ratio_careloop_over_spiff"}
    assert result["sweep_sqlite"]["per_timer_ms_large"] > 0
    if "--pg" in command:
        assert result["sweep_postgresql"]["per_timer_ms_large"] > 0
