"""``careloop scenario run [APP|FILE…]``: run journey scenarios, each in its own database.

Exit codes: 0 every scenario passed, 1 a scenario failed or is invalid, 2 usage error.
"""

from __future__ import annotations

import json
import sys

import click

from careloop.engine.errors import summary_line


@click.group()
def scenario() -> None:
    """Journey scenarios: HIS events, time travel, patients and staff, with expectations."""


@scenario.command("run")
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def run(targets: tuple[str, ...], fmt: str) -> None:
    """Run the scenarios of APPs (names or folders) or scenario FILEs; all apps without any.

    Each runs in a fresh database: a SQLite file, or a fresh schema when CARELOOP_DATABASE_URL
    names PostgreSQL.
    """
    from careloop.web.scenarios.load import UsageProblem, select
    from careloop.web.scenarios.runner import run_scenario

    try:
        selection = select(list(targets))
    except UsageProblem as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    results = []
    for spec, app in selection.scenarios:
        if fmt == "text":
            click.echo(f"scenario {spec.key} ({spec.file})")
        result = run_scenario(spec, app)
        results.append(result)
        if fmt == "text":
            for step in result.steps:
                mark = "✗" if step.failures else "✓"
                click.echo(f"  {mark} [{step.at}] {step.step.label()}: {step.done}".rstrip(": "))
                for failure in step.failures:
                    click.echo(f"    {failure.render()}")
    passed = sum(1 for r in results if r.ok)
    ok = not selection.problems and passed == len(results)
    if fmt == "json":
        click.echo(json.dumps({"ok": ok, "scenarios": [r.to_json() for r in results],
                               "errors": [p.to_json() for p in selection.problems]},
                              ensure_ascii=False, indent=2))
    else:
        for problem in selection.problems:
            click.echo(problem.render())
        if selection.problems:
            click.echo(summary_line(selection.problems, selection.files))
        click.echo(f"{len(results)} scenario(s): {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if ok else 1)
