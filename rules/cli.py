"""``careloop rules test RULESET --event FILE [--format json]``: a dry run that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click

from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError
from careloop.engine.i18n import t


@click.group(name="rules")
def rules() -> None:
    """Rule engine commands."""


@rules.command(name="test")
@click.argument("ruleset")
@click.option("--event", "event_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file: {type, payload} or a bare form.submitted payload.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--locale", default="zh-CN")
def test_command(ruleset: str, event_file: Path, fmt: str, locale: str) -> None:
    """Show which rules of RULESET match the event and what they would do (nothing is stored)."""
    from careloop.rules.runtime import dry_run

    try:
        event = json.loads(event_file.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{event_file}: not a JSON event ({exc})") from None
    if not isinstance(event, dict):
        raise click.ClickException(f"{event_file}: an event must be a JSON object")
    try:
        with transaction() as session:
            outcome = dry_run(session, ruleset, event)
            session.rollback()  # belt and braces: a dry run never commits
    except CareloopError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(outcome.to_json(), ensure_ascii=False, sort_keys=True))
        return
    click.echo(t("rules.dry_run.header", locale, ruleset=ruleset, version=outcome.version))
    if not outcome.applies:
        click.echo(t("rules.dry_run.not_applicable", locale))
        return
    if not outcome.matched:
        click.echo(t("rules.dry_run.no_match", locale))
    for match in outcome.matched:
        values = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                           for k, v in match["values"].items())
        click.echo(t("rules.dry_run.matched", locale, rule=match["rule"], values=values))
        for action in outcome.actions:
            if action["rule"] == match["rule"]:
                would = json.dumps(action["would"], ensure_ascii=False, sort_keys=True)
                click.echo(t("rules.dry_run.would", locale, action=action["do"], options=would))
