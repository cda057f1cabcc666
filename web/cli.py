"""``careloop serve [--workers N]``, ``careloop worker``, ``careloop up [--demo]``, ``careloop
user create-admin``, ``careloop demo seed``.

There are no default accounts: the first administrator is created with ``careloop user
create-admin``; ``careloop up --demo`` (and ``careloop demo seed``) create demo staff with a demo
password that they print, and only when asked to.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fastapi import FastAPI


def settle_heap() -> None:
    """Move what start-up built (modules, the registry, templates) out of the garbage
    collector's sight: a full collection then scans only what requests make, so it no longer
    stops every thread for a few hundred milliseconds under load (issue 20)."""
    import gc

    gc.collect()
    gc.freeze()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--tick-seconds", default=30, show_default=True, type=click.IntRange(0, 3600),
              help="How often this process sweeps due timers and alerts (0: never).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Serving processes (uvicorn workers) on one port; with PostgreSQL. Each "
                   "runs an event dispatcher; the ticker runs once, in the parent.")
def serve(host: str, port: int, tick_seconds: int, workers: int) -> None:
    """Serve the web app, with this process's ticker (timers and alerts live in the database)
    and its event dispatcher (handlers of the events the API acknowledged)."""
    import os

    import uvicorn

    from careloop.engine import logs, ticker
    from careloop.engine.db import database_url

    level = os.environ.get("CARELOOP_LOG_LEVEL", "INFO").upper()
    logs.configure(level)  # access lines too, unless the level is above INFO
    uvicorn_level = level.lower() if level.lower() in uvicorn.config.LOG_LEVELS else "info"
    if workers > 1 and database_url().startswith("sqlite"):
        click.echo("warning: --workers with SQLite: the processes share one write lock; "
                   "use PostgreSQL (CARELOOP_DATABASE_URL) to scale out", err=True)
    scheduler = ticker.start(tick_seconds) if tick_seconds else None
    try:
        if workers > 1:
            # each worker builds its app (and its dispatcher) in its own process: nothing is
            # shared in memory, all state is in the database
            uvicorn.run("careloop.web.cli:worker_app", factory=True, workers=workers,
                        host=host, port=port, log_level=uvicorn_level, log_config=None)
        else:
            app = worker_app()
            uvicorn.run(app, host=host, port=port, log_level=uvicorn_level, log_config=None)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)


def worker_app() -> FastAPI:
    """One serving process's app, with its event dispatcher thread (``serve`` and each of
    ``serve --workers N``'s processes)."""
    import os

    from careloop.engine import dispatcher, logs
    from careloop.web.app import create_app

    logs.configure(os.environ.get("CARELOOP_LOG_LEVEL", "INFO").upper())
    app = create_app()
    dispatcher.Dispatcher().start()
    settle_heap()
    return app


@click.command()
@click.option("--tick-seconds", default=30, show_default=True, type=click.IntRange(0, 3600),
              help="How often to run the tick catalogue (timers, outbox, alerts; 0: never).")
@click.option("--poll-seconds", default=1.0, show_default=True,
              type=click.FloatRange(0.05, 60),
              help="How often to look for events stored by other processes.")
@click.option("--once", is_flag=True, help="Drain the event queue once and stop.")
def worker(tick_seconds: int, poll_seconds: float, once: bool) -> None:
    """Run event handlers from the queue (and the ticker) without serving pages: more of them
    on more machines share the work through the database."""
    import os
    import signal
    import threading

    from careloop.engine import dispatcher, logs, ticker

    logs.configure(os.environ.get("CARELOOP_LOG_LEVEL", "INFO").upper())
    if once:
        report = dispatcher.drain()
        click.echo(f"events handled: {report.handled}, failed: {report.failed}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler = ticker.start(tick_seconds) if tick_seconds else None
    running = dispatcher.Dispatcher(poll_seconds=poll_seconds).start()
    click.echo("careloop worker running (Ctrl+C to stop)")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)


def _demo_login_hint(password: str) -> str:
    return (f"demo data ready. Sign in as 'cardiology_head_nurse', 'cardio_w1_nurse', 'agent', "
            f"'px', 'admin', 'security' or 'auditor' with the demo password: {password}\n"
            "(demo accounts only; never use --demo on a real deployment)")


def _demo_problems(context: dict[str, object]) -> None:
    problems = context.get("problems") or []
    assert isinstance(problems, list)
    for problem in problems:
        click.echo(f"demo: {problem}", err=True)


@click.command()
@click.option("--bundles", "bundle_dir", default="app_definitions", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", "with_demo", is_flag=True,
              help="On first run (no users yet), seed synthetic demo data and demo staff.")
@click.option("--patients", default=120, show_default=True, type=click.IntRange(1, 100000),
              help="Demo patients to create with --demo.")
@click.option("--no-serve", is_flag=True, help="Stop after upgrading and importing.")
@click.pass_context
def up(ctx: click.Context, bundle_dir: Path, host: str, port: int, with_demo: bool,
       patients: int, no_serve: bool) -> None:
    """First-run and every-run start: upgrade the database, import every bundle, serve."""
    from careloop.engine import links
    from careloop.engine.bundles import BundleError, import_bundles, list_bundles
    from careloop.engine.cli import print_conflicts
    from careloop.engine.db import default_engine, transaction
    from careloop.engine.errors import DefinitionInvalid
    from careloop.engine.migrate import upgrade
    from careloop.web.auth import has_any_user

    if with_demo:
        links.use_for_demo(host, port)
    try:
        notice = links.startup_warning()
    except links.BaseUrlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if notice:
        click.echo(f"warning: {notice}", err=True)
    upgrade()
    click.echo("database ready: "
               f"{default_engine().url.render_as_string(hide_password=True)}")
    try:
        # what staff published in the builder stays live: only untouched definitions are updated
        plans = import_bundles(list_bundles([bundle_dir]), actor="careloop up")
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except DefinitionInvalid as exc:
        for problem in exc.problems:
            click.echo(problem.render(), err=True)
        click.echo(f"bundles in {bundle_dir} refused; nothing was changed", err=True)
        sys.exit(1)
    for plan in plans:
        counts = ", ".join(f"{s} {len(plan.refs(s))}" for s in ("added", "changed", "removed"))
        kept = plan.refs("kept")
        if kept:
            counts += f", kept (published in the builder) {len(kept)}"
        click.echo(f"bundle {plan.app_id} {plan.bundle_version}: {counts}")
        conflicts = plan.to_json()["conflicts"]
        if conflicts:
            click.echo(f"  conflicts, not applied: {len(conflicts)}")
            print_conflicts(conflicts)
    with transaction() as session:
        first_run = not has_any_user(session)
    if first_run and with_demo:
        from careloop.web.demo import seed

        context = seed(patients=patients)
        _demo_problems(context)
        click.echo(_demo_login_hint(context["password"]))
    elif first_run:
        click.echo("no users yet: create the administrator with\n"
                   "  careloop user create-admin USERNAME\n"
                   "(or start with demo data: careloop up --demo)")
    if not no_serve:
        click.echo(f"Careloop is running at http://{host}:{port}/  (Ctrl+C to stop)")
        ctx.invoke(serve, host=host, port=port, tick_seconds=30)


@click.group()
def user() -> None:
    """Staff accounts."""


@user.command("create-admin")
@click.argument("username")
@click.option("--display-name", default="", help="Shown in the console (default: USERNAME).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--role", default="security_admin", show_default=True,
              type=click.Choice(["security_admin", "system_admin", "auditor"]),
              help="The administrator's one role (separation of duties: one each).")
def create_admin(username: str, display_name: str, password_stdin: bool, role: str) -> None:
    """Create an administrator account with one administrative role, hospital-wide (no default
    accounts exist). Separation of duties: create the security administrator (users and
    grants), the system administrator and the auditor as three accounts."""
    from careloop.engine.db import transaction
    from careloop.engine.i18n import t
    from careloop.engine.migrate import upgrade
    from careloop.web import admin

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    upgrade()
    try:
        with transaction() as session:
            account = admin.create_user(session, username=username, display_name=display_name,
                                        password=password)
            admin.grant(session, account, role, None)
            from careloop.engine import audit

            audit.append(session, actor="cli", action="user.create", object_type="user",
                         object_id=username, details={"role": role})
    except admin.AdminError as exc:
        click.echo(f"error: {t(exc.key, 'en', **exc.params)}", err=True)
        sys.exit(1)
    click.echo(f"created {username} ({role}); sign in at /login")


@click.group()
def demo() -> None:
    """Synthetic demo data."""


@demo.command("seed")
@click.option("--patients", type=click.IntRange(1, 50_000_000),
              help="Patients (default 120; with --scale 1,000,000; at most 100,000 without).")
@click.option("--seed", "seed_value", default=20261124, show_default=True, type=int)
@click.option("--scale", is_flag=True,
              help="Benchmark dataset at regional volume, written straight into the tables "
                   "(not demo data; see docs/performance.md).")
@click.option("--submissions", default=10_000_000, show_default=True,
              type=click.IntRange(0, 500_000_000), help="With --scale: form submissions.")
@click.option("--tasks", default=1_000_000, show_default=True,
              type=click.IntRange(0, 50_000_000), help="With --scale: open tasks.")
@click.option("--wards", type=click.IntRange(1, 20_000),
              help="With --scale: spread the rows over this many wards of a region (default: "
                   "the demo hospital's wards).")
@click.option("--database", envvar="CARELOOP_DATABASE_URL",
              help="Database URL (default: CARELOOP_DATABASE_URL, else the SQLite file).")
@click.option("--force", is_flag=True,
              help="With --scale: write into a database that holds other patients too.")
def demo_seed(patients: int | None, seed_value: int, scale: bool, submissions: int, tasks: int,
              wards: int | None, database: str | None, force: bool) -> None:
    """Build a synthetic hospital and let months pass: HIS events, sweeps, answers, work.
    With --scale: a benchmark dataset (1M patients, 10M submissions, 1M open tasks by default)
    written in bulk; it refuses a database holding patients it did not generate."""
    import os

    from careloop.engine.migrate import upgrade

    if database:
        os.environ["CARELOOP_DATABASE_URL"] = database
    if scale:
        _scale_seed(patients or 1_000_000, submissions, tasks, seed_value, force, wards)
        return
    if (patients or 120) > 100_000:
        raise click.BadParameter("at most 100,000 without --scale", param_hint="--patients")
    from careloop.web.demo import seed

    upgrade()
    context = seed(patients=patients or 120, seed_value=seed_value)
    _demo_problems(context)
    click.echo(f"seeded {len(context.get('patients', []))} patients, "
               f"{len(context.get('users', {}))} staff")
    click.echo(_demo_login_hint(context["password"]))


def _scale_seed(patients: int, submissions: int, tasks: int, seed_value: int,
                force: bool, wards: int | None = None) -> None:
    from careloop.engine.db import database_url, redact
    from careloop.engine.migrate import upgrade
    from careloop.web.demo import DEMO_PASSWORD
    from careloop.web.scale import ScaleRefused, seed_scale

    upgrade()
    click.echo(f"benchmark dataset (not demo data) into {redact(database_url())}: "
               f"{patients:,} patients, {submissions:,} submissions, {tasks:,} open tasks")
    try:
        result = seed_scale(patients=patients, submissions=submissions, tasks=tasks,
                            seed_value=seed_value, force=force, wards=wards, say=click.echo)
    except ScaleRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    rows = ", ".join(f"{table} {count:,}" for table, count in result.written.items())
    click.echo(f"wrote {rows} in {result.seconds['total']:.0f} s")
    click.echo(_demo_login_hint(DEMO_PASSWORD))
