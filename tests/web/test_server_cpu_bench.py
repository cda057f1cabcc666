"""bench/server_cpu.py's smoke run: every path answers as a hospital's would and the statement
figures it prints are the ones the round-trip tests hold (counted, not timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_server_cpu_bench_quick_runs_every_path(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env["CARELOOP_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "server_cpu.py"), "--quick",
                           "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["database"] == "sqlite"
    for path in ("bare_insert", "bare_list", "events", "dispatch", "submission", "inbox",
                 "patient_360"):
        assert results[path]["requests"] > 0 and results[path]["cpu_ms"] > 0, path
    assert results["bare_insert"]["statements"] == 1.0
    # the events API's and a submission's round trips (tests/web/test_event_statements.py,
    # tests/forms/test_submit_reads.py), the inbox page's (tests/web/test_page_statements.py)
    assert results["events"]["statements"] <= 7
    assert results["submission"]["statements"] <= 6
    assert results["inbox"]["statements"] <= 4
    assert set(results["shares"]) == {"events", "submission", "inbox", "patient_360"}
