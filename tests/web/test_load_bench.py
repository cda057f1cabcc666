"""``bench/load.py --quick`` stays runnable: every path answers under load without a failure and
the events the API acknowledged are all handled afterwards (no timing is asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[2]


def test_load_bench_quick_measures_every_path_and_drains_the_queue(
        engine: Engine, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec is not None and spec.loader is not None
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)

    (result,) = load.quick(tmp_path, connections=(2,), seconds=0.3).values()

    assert set(result["cells"]) == set(load.PATHS)
    for path, (cell,) in result["cells"].items():
        assert cell["requests"] > 0 and cell["failures"] == 0, (path, cell.get("first_failure"))
    assert set(result["ratios"]) == {"events", "submission", "inbox", "patient_360"}
    assert result["queue"]["pending_after"] == 0 and result["queue"]["parked"] == 0
