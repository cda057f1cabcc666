"""Every ``careloop`` command ends in one line on stderr and a non-zero exit when something is
wrong around it (database unreachable, file missing, bad argument); ``CARELOOP_DEBUG=1`` gives
the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from careloop.engine import db as dbmod
from careloop.engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql+psycopg://careloop:secret@127.0.0.1:1/careloop"


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The configured database is one nobody answers at (the suite's engine set aside)."""
    monkeypatch.setenv("CARELOOP_DATABASE_URL", UNREACHABLE)
    monkeypatch.setenv("CARELOOP_HOME", str(tmp_path))
    monkeypatch.delenv("CARELOOP_DEBUG", raising=False)
    monkeypatch.setattr(dbmod, "_override", [])
    monkeypatch.chdir(tmp_path)


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["careloop", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    code = stopped.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.usefixtures("unreachable")
@pytest.mark.parametrize("args", [
    ("db", "upgrade"), ("scheduler", "run-due"), ("audit", "verify"), ("bundle", "conflicts"),
    ("backup", "create", "-o", "out.tar.gz"),
])
def test_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          args: tuple[str, ...]) -> None:
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: the database postgresql+psycopg://careloop:***@")
    assert "unreachable" in lines[0] and "secret" not in err


@pytest.mark.usefixtures("unreachable")
@pytest.mark.parametrize(("args", "code", "says"), [
    (("backup", "verify", "missing.tar.gz"), 2, "does not exist"),
    (("backup", "create"), 2, "either --output FILE or --dir FOLDER"),
    (("scheduler", "run-due", "--now", "soon"), 2, "not an ISO date-time"),
    (("bundle", "resolve", "0", "--keep", "builder"), 2, "0"),
    (("no-such-command",), 2, "No such command"),
])
def test_missing_file_and_bad_argument_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str],
                                                    args: tuple[str, ...], code: int,
                                                    says: str) -> None:
    exit_code, err = _main(monkeypatch, capsys, *args)
    assert exit_code == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err


@pytest.mark.usefixtures("unreachable")
def test_debug_lets_the_exception_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["careloop", "audit", "verify"])
    with pytest.raises(OperationalError):
        main()


def test_a_real_process_ends_in_one_line(tmp_path: Path) -> None:
    """The console script as an operator runs it: no traceback reaches the terminal."""
    env = {**os.environ, "CARELOOP_DATABASE_URL": UNREACHABLE, "CARELOOP_HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT / ".ci" / "typing")}
    env.pop("CARELOOP_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "careloop", "scheduler", "run-due"], env=env,
                          text=True, capture_output=True, timeout=120)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the database ")


@pytest.mark.usefixtures("unreachable")
def test_a_group_without_its_command_shows_its_help(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(monkeypatch, capsys, "backup")
    assert code == 2
    assert err.startswith("Usage: careloop backup") and "restore" in err

