"""CLI: ``careloop his-views list|poll NAME`` and ``careloop import patients FILE``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.group("his-views")
def his_views() -> None:
    """HIS database views polled on the ticker."""


@his_views.command("list")
def list_views() -> None:
    """Each view, when it was last polled, its watermark and its last error."""
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction
    from careloop.flows.inbound.views import error_text, view_states

    with transaction() as session:
        for item in view_states(session):
            state = item["state"]
            polled = (to_local(state.last_poll_at).strftime("%Y-%m-%d %H:%M:%S")
                      if state is not None and state.last_poll_at else "never")
            error = error_text(item["error"], "en") if item["error"] else ""
            click.echo(f"{item['key']}\t{polled}\t{item['watermark']}\t{error}")


@his_views.command("poll")
@click.argument("name")
def poll_view(name: str) -> None:
    """Poll view NAME once now (whatever its interval); exit 1 if the poll failed."""
    from careloop.engine.db import default_engine, transaction
    from careloop.engine.errors import NotFound
    from careloop.flows.inbound.views import poll, spec_of

    engine = default_engine()
    try:
        with transaction(engine) as session:
            spec = spec_of(session, name)
    except NotFound as exc:
        raise click.ClickException(f"{exc} (careloop his-views list names them)") from None
    result = poll(engine, spec, force=True)
    click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    if result.status == "busy":
        click.echo(f"{name}: another process is polling it now", err=True)
    if result.status in ("error", "lease_lost"):
        sys.exit(1)


@click.group("import")
def import_group() -> None:
    """Import data from files."""


@import_group.command("patients")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default="default", show_default=True,
              help="Name of the system the file comes from (its column mapping is remembered).")
@click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
              help="Map a field to a column header (e.g. --map mrn=住院号); the rest is guessed "
                   "or remembered.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Import the accepted rows (default: a dry run that only reports).")
@click.option("--locale", default="zh-CN", show_default=True, type=click.Choice(["zh-CN", "en"]))
def import_patients(file: Path, source: str, maps: tuple[str, ...], do_apply: bool,
                    locale: str) -> None:
    """Check FILE.xlsx|csv and list every row it would reject (FILE:ROW:COLUMN: reason); with
    --apply, import the rest 500 rows a batch, all or nothing per batch."""
    from careloop.engine.db import default_engine, transaction
    from careloop.flows.inbound import patients_import as pi

    engine = default_engine()
    try:
        table = pi.read_table(file.name, file.read_bytes())
    except pi.ImportFileError as exc:
        raise click.ClickException(f"{file}: {exc.text(locale)}") from None
    with transaction(engine) as session:
        mapping = pi.remembered_mapping(session, source, table.headers)
    for item in maps:
        field, _, column = item.partition("=")
        if not column:
            raise click.BadParameter(f"{item!r} is not FIELD=COLUMN", param_hint="'--map'")
        mapping[field.strip()] = column.strip()
    problems = pi.mapping_problems(table.headers, mapping)
    if problems:
        for p in problems:
            click.echo(f"{file}: {pi.mapping_problem_text(p, locale)}", err=True)
        sys.exit(2)
    with transaction(engine) as session:
        report = pi.check(session, table, mapping)
        if do_apply:
            pi.remember_mapping(session, source, mapping, "cli")
    for r in report.rejected:
        click.echo(f"{file}:{r.row}:{r.column}: {pi.reason_text(r, locale)}")
    summary = report.to_json()
    click.echo(json.dumps({"rows": summary["total"], "accepted": summary["accepted"],
                           "merged": summary["merged"],
                           "rejected_rows": summary["rejected_rows"],
                           "mapping": mapping}, ensure_ascii=False), err=True)
    if not do_apply:
        return
    started = time.perf_counter()
    result = pi.apply(engine, report.patients, source=source, actor="cli")
    click.echo(json.dumps({**result.to_json(),
                           "seconds": round(time.perf_counter() - started, 1)},
                          ensure_ascii=False), err=True)
    if result.failed_batches:
        sys.exit(1)


def commands() -> list[click.Command]:
    return [his_views, import_group]
