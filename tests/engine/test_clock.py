"""Business time comes from the engine clock only: no other read of the wall clock in the package,
an offset that moves every process, and ``careloop --now`` for one command."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from careloop.engine.clock import (
    OFFSET_ENV,
    ClockError,
    clock_offset,
    frozen_now,
    now_utc,
    parse_offset,
    wall_clock_utc,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "forms", "flows", "rules", "reports", "web")
CLOCK_MODULE = ROOT / "engine" / "clock.py"

# (object, attribute) pairs that read the machine's or the database's clock.
_WALL_CLOCK = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "time_ns"), ("time", "localtime"), ("time", "gmtime"),
    ("time", "ctime"), ("time", "strftime"),
    ("func", "now"), ("func", "current_timestamp"), ("func", "current_date"),
    ("func", "localtimestamp"),
}


def wall_clock_reads(source: str) -> list[tuple[int, str]]:
    """Line and text of every call that reads the wall clock directly."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else (
            owner.attr if isinstance(owner, ast.Attribute) else None)
        if (name, node.func.attr) in _WALL_CLOCK:
            found.append((node.lineno, f"{name}.{node.func.attr}()"))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.upper()
            if "CURRENT_TIMESTAMP" in text or ("NOW()" in text and "SELECT" in text):
                found.append((node.lineno, "SQL clock"))
    return found


def test_the_scanner_finds_what_it_forbids() -> None:
    sample = ("from datetime import date, datetime\nimport time\n"
              "a = datetime.now()\nb = date.today()\nc = time.time()\n"
              "d = sqlalchemy.func.now()\ne = time.monotonic()\n")
    assert [line for line, _ in wall_clock_reads(sample)] == [3, 4, 5, 6]


def test_no_business_time_outside_the_engine_clock() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == CLOCK_MODULE or "migrations" in path.parts:
                continue
            for line, what in wall_clock_reads(path.read_text("utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert offenders == [], "read careloop.engine.clock.now_utc() instead:\n" + "\n".join(
        offenders)


def test_offset_moves_now_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OFFSET_ENV, "+365d")
    assert clock_offset() == timedelta(days=365)
    moved = now_utc() - wall_clock_utc()
    assert abs(moved - timedelta(days=365)) < timedelta(seconds=5)
    with frozen_now(datetime(2026, 1, 1, tzinfo=UTC)):  # freezing wins over the offset
        assert now_utc() == datetime(2026, 1, 1, tzinfo=UTC)
    monkeypatch.setenv(OFFSET_ENV, "a year")
    with pytest.raises(ClockError, match="CARELOOP_CLOCK_OFFSET='a year'"):
        now_utc()
    assert parse_offset("-2h") == timedelta(hours=-2)
    assert parse_offset("3600") == timedelta(hours=1)


def _careloop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != OFFSET_ENV}
    return subprocess.run([sys.executable, "-m", "careloop", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_now_option_starts_the_commands_clock() -> None:
    result = _careloop("--now", "2030-01-01T09:00", "expr", "eval", "now()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('"2030-01-01T09:0'), result.stdout
    bad = _careloop("--now", "next tuesday", "expr", "eval", "today()")
    assert bad.returncode == 2 and "not an ISO date-time" in bad.stderr
