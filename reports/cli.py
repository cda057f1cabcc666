"""``careloop report run DATASET [--param k=v] [--format json|csv]`` and
``careloop report alerts run [--now ISO]``."""

from __future__ import annotations

import json
from datetime import datetime

import click

from careloop.engine.db import transaction
from careloop.reports.dialect import ReportError


@click.group("report")
def report() -> None:
    """Run report datasets and alerts."""


@report.command("run")
@click.argument("dataset")
@click.option("--param", "params", multiple=True, metavar="K=V",
              help="from=YYYY-MM-DD, to=YYYY-MM-DD, department=a,b, form=key")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
def run(dataset: str, params: tuple[str, ...], fmt: str) -> None:
    """Run DATASET (a stored dataset key) hospital-wide and print its rows."""
    from careloop.reports.export import to_csv
    from careloop.reports.query import Filters
    from careloop.reports.runtime import load_spec, run_cached

    try:
        pairs = dict(_pair(p) for p in params)
        with transaction() as session:
            spec = load_spec(session, "dataset", dataset)
            result = run_cached(session, spec, filters=Filters.from_params(pairs), scope=None)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "csv":
        click.echo(to_csv(result), nl=False)
    else:
        click.echo(json.dumps({"columns": result.columns, "rows": result.rows},
                              ensure_ascii=False, default=str))


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ReportError(f"--param {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


@report.group("alerts")
def alerts() -> None:
    """Threshold alerts."""


@alerts.command("run")
@click.option("--now", "now_text", default=None, help="evaluate as of this ISO instant")
def alerts_run(now_text: str | None) -> None:
    """Evaluate every stored alert once (what the scheduler tick calls)."""
    from careloop.engine.clock import frozen_now, now_utc
    from careloop.reports.alerts import run_alerts

    try:
        at = datetime.fromisoformat(now_text) if now_text else None
    except ValueError as exc:
        raise click.ClickException(f"--now: {exc}") from exc
    with frozen_now(at or now_utc()), transaction() as session:
        outcomes = run_alerts(session)
    for o in outcomes:
        value = "n/a" if o.value is None else f"{o.value:.1f}"
        click.echo(f"{o.alert} {o.group}: {o.state} ({value}){' FIRED' if o.fired else ''}")
