"""How fast the command line starts (issue 18, point 6).

    python bench/cli.py [--runs N] [--json]

Runs, each N times in fresh processes, ``careloop --version``, ``careloop --help`` (which loads
every engine and plugin to list their commands) and two peers measured in the same run: a bare
``python -c pass`` and a one-command click program with a version option (what any Python CLI
pays at least). Prints medians and the ratio of ``careloop --version`` to the click peer.
Loopback only, nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CAREL = [sys.executable, "-c", "from careloop.engine.cli import main; main()"]
CLICK_PEER = ("import click\n"
              "@click.group()\n@click.version_option('1.0', prog_name='peer')\n"
              "def cli():\n    pass\n"
              "cli()\n")


def _median(argv: list[str], runs: int) -> float:
    times = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=False, capture_output=True, env=env,
                       cwd=Path(__file__).resolve().parents[1])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = {
        "python -c pass": _median([sys.executable, "-c", "pass"], args.runs),
        "click peer --version": _median([sys.executable, "-c", CLICK_PEER, "--version"],
                                        args.runs),
        "careloop --version": _median([*CAREL, "--version"], args.runs),
        "careloop --help (every engine and plugin)": _median([*CAREL, "--help"], args.runs),
    }
    ratio = rows["careloop --version"] / rows["click peer --version"]
    if args.json:
        print(json.dumps({"seconds": rows, "version_vs_click": ratio}))
        return
    for name, seconds in rows.items():
        print(f"{name:45s} {seconds * 1000:8.0f} ms")
    print(f"careloop --version / click peer: {ratio:.2f}x (target: --version under 0.5 s)")


if __name__ == "__main__":
    main()
