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


def test_import_bench_runs_in_process_and_reports_the_peer() -> None:
    """bench/import_patients.py on 120 rows: both measured, the second run stored nothing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_import_patients",
                                                  ROOT / "bench" / "import_patients.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    url = os.environ.get("CARELOOP_DATABASE_URL")
    pg = url if url and make_url(url).get_backend_name() == "postgresql" else None
    result = bench.run(120, pg, apps=False)
    assert (result["rows"], result["patients"], result["rejected_rows"]) == (120, 112, 7)
    assert result["apply"] > 0 and result["bare_insert"] > 0 and result["apply_vs_bare"] > 0
