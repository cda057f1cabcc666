"""The ``careloop`` command line. Engines add their own groups through :func:`main`'s registry.

Exit codes: 0 success, 1 invalid input (a definition, a bundle, an expression) or a failure
(database unreachable, file missing), 2 usage error. Whatever goes wrong ends in one line on
stderr (:func:`error_line`); ``CARELOOP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from careloop import __version__
from careloop.engine.errors import DefinitionInvalid, NotFound, Problem, summary_line


def _print_problems(problems: list[Problem], files: int, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({
            "ok": not any(p.severity == "error" for p in problems), "files": files,
            "errors": [p.to_json() for p in problems if p.severity == "error"],
            "warnings": [p.to_json() for p in problems if p.severity == "warning"],
        }, ensure_ascii=False, indent=2))
        return
    for problem in problems:
        click.echo(problem.render())
    click.echo(summary_line(problems, files))


FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output format.")


def _start_clock(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if not value:
        return
    from datetime import datetime

    from careloop.engine.clock import start_clock_at

    try:
        start_clock_at(datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter(f"not an ISO date-time: {value!r}", ctx=ctx,
                                 param=param) from None


class _Careloop(click.Group):
    """The top group: the engines' commands (and so every plugin) are loaded only when a
    command is looked up or listed, so ``careloop --version`` starts at once."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        _add_engine_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _add_engine_commands()
        return super().list_commands(ctx)


@click.group(cls=_Careloop, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="careloop")
@click.option("--now", callback=_start_clock, expose_value=False, is_eager=True,
              metavar="ISO", help="Start the clock at this instant (naive: hospital time) and "
                                  "let it run on: time travel for trials and demos. "
                                  "CARELOOP_CLOCK_OFFSET (+365d, -2h) does the same for every "
                                  "process.")
def cli() -> None:
    """Careloop: patient-experience management — forms, flows, rules and dashboards as data."""
    from careloop.engine import logs

    logs.configure()


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@FORMAT
def validate(paths: tuple[Path, ...], fmt: str) -> None:
    """Check definitions: files, folders and bundle zips. Exit 1 if any is invalid."""
    from careloop.engine.validate import validate_paths

    report = validate_paths(list(paths))
    _print_problems(report.problems, report.files, fmt)
    sys.exit(0 if report.ok else 1)


@cli.group()
def schema() -> None:
    """JSON Schemas of the definition kinds (for editor autocompletion)."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schema_export(directory: Path) -> None:
    """Write one JSON Schema per kind, plus app.schema.json, into DIRECTORY."""
    from careloop.engine.schema import all_schemas

    directory.mkdir(parents=True, exist_ok=True)
    for name, body in all_schemas().items():
        (directory / name).write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
        click.echo(f"wrote {directory / name}")


@cli.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="First write a backup (careloop-before-upgrade-<date>-<time>.tar.gz) into "
                   "this folder when there is something to upgrade.")
def db_upgrade(backup_dir: Path | None) -> None:
    """Create or upgrade the database to the newest schema (idempotent). Each migration is one
    transaction: an interrupted upgrade is continued by the next one."""
    from careloop.engine.db import database_url, redact
    from careloop.engine.migrate import current_revisions, is_current, upgrade

    current = current_revisions()
    if backup_dir is not None and current and not is_current():
        from careloop.engine.backup import create
        from careloop.engine.clock import now_utc, to_local

        target = backup_dir / f"careloop-before-upgrade-{to_local(now_utc()):%Y%m%d-%H%M%S}.tar.gz"
        create(target)
        click.echo(f"backup before the upgrade: {target}")
    upgrade()
    click.echo(f"database {redact(database_url())} at revision "
               f"{', '.join(sorted(current_revisions()))}")


@db.command("app-role")
@click.argument("role")
def db_app_role(role: str) -> None:
    """PostgreSQL: grant ROLE (an existing role that does not own the tables) what the
    application needs, with only SELECT and INSERT on the audit tables. Run it as the owner,
    after every upgrade, and connect the application as ROLE."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from careloop.engine import audit_guard
    from careloop.engine.db import default_engine

    try:
        with default_engine().begin() as connection:
            statements = audit_guard.grant_app_role(connection, role)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except SQLAlchemyError as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        click.echo(f"error: the database refused the grants ({type(cause).__name__})",
                   err=True)
        sys.exit(1)
    for statement in statements:
        click.echo(statement)
    click.echo(f"{role} may read and append the audit trail, never change or delete it")


@cli.group()
def bundle() -> None:
    """Import and export app bundles."""


@bundle.command("import")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@FORMAT
def bundle_import(paths: tuple[Path, ...], dry_run: bool, fmt: str) -> None:
    """Import bundles (folders, .zip files, or a folder of bundles) atomically, each after the
    apps it requires, after printing their plan. What staff published in the builder is kept;
    where the bundle changed it too, the conflict is listed for an administrator to resolve."""
    from careloop.engine.bundles import BundleError, import_bundles, list_bundles

    try:
        bundles: list[Path] = []
        for path in paths:
            inside = list_bundles([path])
            if not inside:
                raise BundleError(f"{path}: neither a bundle (no app.yaml) nor a folder of "
                                  "bundles")
            bundles.extend(inside)
        plans = import_bundles(bundles, dry_run=dry_run)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except DefinitionInvalid as exc:
        if fmt == "json":
            click.echo(json.dumps({"applied": False,
                                   "errors": [p.to_json() for p in exc.problems]},
                                  ensure_ascii=False, indent=2))
        else:
            for problem in exc.problems:
                click.echo(problem.render())
            click.echo(f"bundle refused: {len(exc.problems)} error(s); nothing was changed")
        sys.exit(1)
    if fmt == "json":
        # one bundle: its plan (as before); several: {"bundles": [plan, …]} in import order
        data = (plans[0].to_json() if len(plans) == 1
                else {"applied": any(p.applied for p in plans),
                      "bundles": [p.to_json() for p in plans]})
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for plan in plans:
        _print_plan(plan.to_json(), dry_run)


def print_conflicts(conflicts: list[dict[str, object]], err: bool = False) -> None:
    """The conflicts of a plan, one line each, and where to resolve them."""
    for conflict in conflicts:
        side = ("removed it" if conflict["bundle"] == "removed" else "changed it")
        click.echo(f"    {conflict['ref']}: published in the builder (version "
                   f"{conflict['live_version']} stays live) and the bundle {side}", err=err)
    if conflicts:
        click.echo("  resolve at /admin/bundles/conflicts (keep the builder's version or take "
                   "the bundle's)", err=err)


def _print_plan(plan: dict[str, object], dry_run: bool) -> None:
    click.echo(f"app {plan['app']} {plan['version']}")
    for status in ("added", "changed", "unchanged", "removed", "kept"):
        refs = plan[status]
        assert isinstance(refs, list)
        label = "kept (published in the builder)" if status == "kept" else status
        click.echo(f"  {label}: {len(refs)}")
        if status != "unchanged":
            for ref in refs:
                click.echo(f"    {ref}")
    conflicts = plan["conflicts"]
    assert isinstance(conflicts, list)
    click.echo(f"  conflicts (not applied): {len(conflicts)}")
    print_conflicts(conflicts)
    diffs = plan["diffs"]
    assert isinstance(diffs, dict)
    for ref, diff in diffs.items():
        click.echo(f"--- diff of {ref}\n{diff}")
    if dry_run:
        click.echo("dry run: nothing was changed")
    elif plan["applied"]:
        click.echo("applied")
    else:
        click.echo("nothing to change")


@bundle.command("conflicts")
@FORMAT
def bundle_conflicts(fmt: str) -> None:
    """List definitions changed both in the builder and in their bundle (not applied)."""
    from careloop.engine.bundles import open_conflicts
    from careloop.engine.db import transaction

    with transaction() as session:
        rows = [{"id": c.id, "app": c.app_id, "ref": f"{c.kind}/{c.key}",
                 "live_version": c.live_version, "bundle_version": c.bundle_version,
                 "bundle": "removed" if c.content_hash is None else "changed"}
                for c in open_conflicts(session)]
    if fmt == "json":
        click.echo(json.dumps({"conflicts": rows}, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['id']}: {row['app']} {row['ref']}: published in the builder (version "
                   f"{row['live_version']} stays live) and bundle {row['bundle_version']} "
                   f"{'removed' if row['bundle'] == 'removed' else 'changed'} it")
    click.echo(f"{len(rows)} open conflict(s)" + (
        "; resolve with careloop bundle resolve ID --keep builder|bundle, or at "
        "/admin/bundles/conflicts" if rows else ""))


@bundle.command("resolve")
@click.argument("conflict_id", type=click.IntRange(1))
@click.option("--keep", type=click.Choice(["builder", "bundle"]), required=True,
              help="builder: the live version stays; bundle: the bundle's text becomes a new "
                   "version (or the definition is retired, when the bundle removed it).")
def bundle_resolve(conflict_id: int, keep: str) -> None:
    """Resolve a conflict listed by ``careloop bundle conflicts`` (audited; nothing is deleted)."""
    from careloop.engine.bundles import resolve_conflict
    from careloop.engine.db import transaction

    try:
        with transaction() as session:
            live = resolve_conflict(session, conflict_id, keep, actor="cli")
            shown = f"version {live.version} is live" if live is not None else "retired"
    except NotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except DefinitionInvalid as exc:
        for problem in exc.problems:
            click.echo(problem.render())
        click.echo("the bundle's version no longer checks; nothing was changed")
        sys.exit(1)
    click.echo(f"conflict {conflict_id} resolved ({keep}): {shown}")


@bundle.command("export")
@click.argument("app_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def bundle_export(app_id: str, output: Path) -> None:
    """Write APP_ID's manifest and current definitions as a zip that re-imports unchanged."""
    from careloop.engine.bundles import export_bundle

    try:
        data = export_bundle(app_id)
    except NotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    output.write_bytes(data)
    click.echo(f"wrote {output} ({len(data)} bytes)")


@cli.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@click.option("--checkpoints", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The checkpoint file (default CARELOOP_AUDIT_CHECKPOINTS or "
                   "var/audit-checkpoints.jsonl).")
def audit_verify(checkpoints: Path | None) -> None:
    """Check the audit chain with the audit key, and the table against the signed checkpoints;
    exit 1 if any row was altered, deleted, moved or re-chained, or the table was truncated."""
    from careloop.engine import audit as audit_log
    from careloop.engine.audit_key import AuditKeyError
    from careloop.engine.db import transaction

    try:
        with transaction() as session:
            breaks = list(audit_log.verify(session, checkpoints=checkpoints))
            rows = session.scalar(audit_log.row_count())
    except AuditKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for item in breaks:
        click.echo(item.render())
    click.echo(f"audit trail intact ({rows:,} rows)" if not breaks
               else f"{len(breaks)} break(s) in the audit trail")
    sys.exit(1 if breaks else 0)


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Append a signed checkpoint (last id, row count, last hash, time) to the checkpoint file
    (and syslog, with CARELOOP_AUDIT_SYSLOG). The audit.checkpoint tick does this hourly."""
    from careloop.engine import audit as audit_log
    from careloop.engine.audit_key import AuditKeyError
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction

    path = audit_log.checkpoint_path()
    if path is None:
        click.echo(f"error: checkpoints are off ({audit_log.CHECKPOINTS_ENV}=off)", err=True)
        sys.exit(1)
    try:
        with transaction() as session:
            entry = audit_log.checkpoint(session, path)
    except AuditKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    from datetime import datetime

    at = to_local(datetime.fromisoformat(entry["at"]))
    click.echo(f"checkpoint at {at:%Y-%m-%d %H:%M}: {entry['count']:,} rows, last row "
               f"{entry['last_id']:,}; written to {path}")


_engine_commands_added: list[bool] = []


def _add_engine_commands() -> None:
    """Add the engines' and plugins' commands to the top group (once per process)."""
    if _engine_commands_added:
        return
    _engine_commands_added.append(True)
    from careloop.engine.cli_expr import expr
    from careloop.engine.registry import loaded_registry

    cli.add_command(expr)
    for _, command in loaded_registry().catalogue("cli").items():
        cli.add_command(command)


DEBUG_ENV = "CARELOOP_DEBUG"
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError",
                                                   click.UsageError)


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong, without SQL or its parameters (they may hold patient
    data): ``the database postgresql+psycopg://careloop:***@db/careloop is unreachable: …``."""
    from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

    from careloop.engine.errors import CareloopError

    if isinstance(exc, OperationalError):
        from careloop.engine.db import database_url, redact

        first = (str(exc.orig).strip().splitlines() or [""])[0]
        return (f"the database {redact(database_url())} is unreachable or failed "
                f"({type(exc.orig).__name__}: {first})")
    if isinstance(exc, DBAPIError):
        first = (str(exc.orig).strip().splitlines() or [""])[0]
        return f"the database refused a statement ({type(exc.orig).__name__}: {first})"
    if isinstance(exc, SQLAlchemyError):
        return f"database error ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    if isinstance(exc, CareloopError):
        return " ".join(str(exc).split())
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"{type(exc).__name__}: {first} (an internal error: run again with {DEBUG_ENV}=1 "
            "for the traceback and report it)")


def main() -> None:
    """Console-script entry point: every failure ends in one ``error:`` line on stderr and a
    non-zero exit (``CARELOOP_DEBUG=1``: the traceback instead)."""
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        result = cli.main(prog_name="careloop", standalone_mode=False)
    except click.UsageError as exc:
        if debug or isinstance(exc, _NO_ARGS_IS_HELP):
            exc.show()  # a group without its command: its help, as click shows it
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "careloop"
        click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"error: {error_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
