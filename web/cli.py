"""``careloop serve`` and ``careloop up`` (upgrade, import the bundles, serve)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the web app."""
    import uvicorn

    from careloop.web.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="info")


@click.command()
@click.option("--bundles", "bundle_dir", default="app_definitions", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Stop after upgrading and importing.")
@click.pass_context
def up(ctx: click.Context, bundle_dir: Path, host: str, port: int, no_serve: bool) -> None:
    """First-run and every-run start: upgrade the database, import every bundle, serve."""
    from careloop.engine.bundles import import_bundle, list_bundles
    from careloop.engine.db import database_url, redact
    from careloop.engine.errors import DefinitionInvalid
    from careloop.engine.migrate import upgrade

    upgrade()
    click.echo(f"database ready: {redact(database_url())}")
    for path in list_bundles([bundle_dir]):
        try:
            plan = import_bundle(path, actor="careloop up")
        except DefinitionInvalid as exc:
            for problem in exc.problems:
                click.echo(problem.render(), err=True)
            click.echo(f"bundle {path} refused; nothing was changed", err=True)
            sys.exit(1)
        counts = ", ".join(f"{s} {len(plan.refs(s))}" for s in ("added", "changed", "removed"))
        click.echo(f"bundle {plan.app_id} {plan.bundle_version}: {counts}")
    if not no_serve:
        click.echo(f"Careloop is running at http://{host}:{port}/  (Ctrl+C to stop)")
        ctx.invoke(serve, host=host, port=port)
