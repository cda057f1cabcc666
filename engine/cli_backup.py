"""CLI: ``careloop backup create|verify|restore`` (registered in ``engine/builtins.py``).

See :mod:`careloop.engine.backup` for what an archive holds and docs/operations.md for
scheduling, retention and the audit key.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

ARCHIVE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def backup() -> None:
    """Back up the database, uploaded files and audit checkpoints; verify; restore."""


def _summary(manifest: dict[str, Any]) -> str:
    created = datetime.fromisoformat(manifest["created_at"])
    return (f"made {created:%Y-%m-%d %H:%M:%S} (hospital time) from {manifest['dialect']}, "
            f"revision {', '.join(manifest['revisions']) or '(none)'}: "
            f"{manifest['rows']:,} rows in {len(manifest['tables'])} tables, "
            f"{manifest['uploads']:,} uploaded file(s)")


@backup.command("create")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The archive to write.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Write careloop-<date>-<time>.tar.gz into this folder instead.")
@click.option("--keep", type=click.IntRange(1), default=None,
              help="With --dir: then delete all but the KEEP newest archives there.")
@click.option("--verify", "then_verify", is_flag=True,
              help="Then verify the archive (restoring it into a scratch database); exit 1 "
                   "if it is not usable.")
def backup_create(output: Path | None, folder: Path | None, keep: int | None,
                  then_verify: bool) -> None:
    """Write one archive: a consistent copy of the database (SQLite online backup, or pg_dump
    on one snapshot), the uploaded files, the audit checkpoints and a manifest. The audit key
    is not included: the manifest says where it is; keep a copy of it elsewhere."""
    from careloop.engine import backup as backups
    from careloop.engine.clock import now_utc, to_local

    if (output is None) == (folder is None):
        raise click.UsageError("give either --output FILE or --dir FOLDER")
    if keep is not None and folder is None:
        raise click.UsageError("--keep needs --dir")
    if folder is not None:
        output = folder / f"careloop-{to_local(now_utc()):%Y%m%d-%H%M%S}.tar.gz"
    assert output is not None  # one of the two, checked above
    manifest = backups.create(output)
    click.echo(f"wrote {output} ({output.stat().st_size:,} bytes): {_summary(manifest)}")
    key = manifest["audit_key"]
    click.echo(f"the audit key is not in the archive: it is at {key['location']}; keep a copy "
               "of it apart from the backups")
    if then_verify and not _report(output, backups.verify(output)):
        sys.exit(1)  # older archives are kept when this one is not usable
    if folder is not None and keep is not None:
        for gone in backups.prune(folder, keep):
            click.echo(f"deleted {gone} (keeping the {keep} newest)")


@backup.command("verify")
@click.argument("archive", type=ARCHIVE)
@click.option("--no-restore", is_flag=True,
              help="Check the manifest and hashes only, without restoring into a scratch "
                   "database.")
def backup_verify(archive: Path, no_restore: bool) -> None:
    """Check ARCHIVE: its manifest, the sha256 of every part and (unless --no-restore) that it
    restores into a scratch database with the manifest's row counts and an intact audit
    chain. Exit 1 if anything is wrong."""
    from careloop.engine import backup as backups

    if not _report(archive, backups.verify(archive, restore_check=not no_restore),
                   restored=not no_restore):
        sys.exit(1)


def _report(archive: Path, result: Any, restored: bool = True) -> bool:
    click.echo(f"{archive}: {_summary(result.manifest)}")
    for problem in result.problems:
        click.echo(f"  problem: {problem}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    if not result.ok:
        click.echo(f"backup NOT usable: {len(result.problems)} problem(s)")
        return False
    parts = len(result.manifest["parts"])
    if not restored:
        click.echo(f"backup verified: {parts} part(s) match their sha256 (not restored)")
        return True
    audit = (f"; audit trail intact ({result.audit_rows:,} rows)"
             if result.audit_rows is not None else "")
    click.echo(f"backup verified: {parts} part(s) match their sha256; restored into a scratch "
               f"database with {result.restored_rows:,} rows as in the manifest{audit}")
    return True


@backup.command("restore")
@click.argument("archive", type=ARCHIVE)
@click.option("--force", is_flag=True,
              help="Replace the contents of a database that is not empty.")
def backup_restore(archive: Path, force: bool) -> None:
    """Restore ARCHIVE into the configured database (only an empty one unless --force), with
    its uploaded files and audit checkpoints, then verify the audit trail. Stop every Careloop
    process on the database first; put the backup's audit key in place first."""
    from careloop.engine import audit as audit_log
    from careloop.engine import backup as backups
    from careloop.engine.db import default_engine, redact, transaction

    done = backups.restore(archive, force=force)
    into = redact(default_engine().url.render_as_string(False))
    click.echo(f"restored {archive} into {into}: {_summary(done.manifest)}")
    if done.set_aside is not None:
        click.echo(f"the checkpoint file that was there is kept as {done.set_aside}")
    with transaction() as session:
        breaks = list(audit_log.verify(session, checkpoints=done.checkpoints,
                                       use_checkpoints=done.checkpoints is not None))
        rows = session.scalar(audit_log.row_count())
    for item in breaks:
        click.echo(item.render())
    click.echo(f"audit trail intact ({rows:,} rows)" if not breaks
               else f"{len(breaks)} break(s) in the restored audit trail")
    sys.exit(1 if breaks else 0)
