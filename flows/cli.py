"""CLI: ``careloop scheduler run-due``, ``careloop events send``, ``careloop apikey create``,
``careloop flows incident retry|skip`` and ``careloop flows run ID``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from careloop.engine.clock import hospital_tz


@click.group()
def scheduler() -> None:
    """Durable timers and the outbox."""


@scheduler.command("run-due")
@click.option("--now", "now_text", help="Process everything due up to this ISO time "
                                        "(naive = hospital time). Default: now.")
@click.option("--batch", default=100, show_default=True, help="Timers claimed per batch.")
def run_due_command(now_text: str | None, batch: int) -> None:
    """Fire due timers, emit task.overdue, dispatch due messages."""
    from careloop.flows.scheduler import run_due

    now = None
    if now_text:
        now = datetime.fromisoformat(now_text)
        if now.tzinfo is None:
            now = now.replace(tzinfo=hospital_tz())
    report = run_due(now=now, batch=batch)
    click.echo(json.dumps(report.to_json(), ensure_ascii=False))


@click.group()
def events() -> None:
    """Domain events from the HIS."""


@events.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def events_send(file: Path) -> None:
    """Ingest FILE.jsonl (one event per line); exit 1 if any line was rejected."""
    from careloop.engine.db import transaction
    from careloop.flows.ingest import ingest

    failed = 0
    for number, line in enumerate(file.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            click.echo(f"{file}:{number}: invalid JSON: {exc.msg}")
            failed += 1
            continue
        with transaction() as session:
            status, body = ingest(session, event, source="cli")
        if status == 202:
            click.echo(f"{file}:{number}: parked {body['event_id']} for IT: "
                       + "; ".join(f"{p['path']}: {p['message']}" for p in body["errors"]))
        elif status != 200:
            failed += 1
            for problem in body["errors"]:
                click.echo(f"{file}:{number}: {problem['path']}: {problem['message']}")
        else:
            click.echo(f"{file}:{number}: accepted {body['event_id']}")
    sys.exit(1 if failed else 0)


@click.group()
def apikey() -> None:
    """API keys for POST /api/v1/events."""


@apikey.command("create")
@click.argument("name")
def apikey_create(name: str) -> None:
    """Create a key named NAME and print it once (only its hash is stored)."""
    from careloop.engine.db import transaction
    from careloop.flows.ingest import create_api_key

    with transaction() as session:
        key = create_api_key(session, name)
    click.echo(key)


@click.group()
def flows() -> None:
    """Flow runs and incidents."""


@flows.command("incident")
@click.argument("action", type=click.Choice(["retry", "skip"]))
@click.argument("incident_id", type=int)
@click.option("--actor", default="cli", show_default=True)
def incident(action: str, incident_id: int, actor: str) -> None:
    """Retry or skip an open incident."""
    from careloop.engine.db import transaction
    from careloop.engine.errors import CareloopError
    from careloop.flows.runtime import resolve_incident

    try:
        with transaction() as session:
            resolve_incident(session, incident_id, action, actor)
    except CareloopError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"incident {incident_id}: {action} done")


@flows.command("run")
@click.argument("run_id", type=int)
def show_run(run_id: int) -> None:
    """Print a run, its steps and its history as JSON."""
    from careloop.engine.db import transaction
    from careloop.flows.views import run_json

    with transaction() as session:
        data = run_json(session, run_id)
    if data is None:
        click.echo(f"error: no run {run_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@flows.command("messages")
@click.argument("patient_id")
@click.option("--limit", default=20, show_default=True)
def messages(patient_id: str, limit: int) -> None:
    """Print one patient's newest messages with their text and links, in hospital time: what a
    trial without SMS or WeChat gateways reads instead of the phone (audited)."""
    from sqlalchemy import select

    from careloop.engine.audit import append
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text

    with transaction() as session:
        rows = session.scalars(select(OutboxMessage).where(
            OutboxMessage.patient_id == patient_id).order_by(OutboxMessage.id.desc())
            .limit(limit)).all()
        for m in reversed(rows):
            at = to_local(m.sent_at or m.created_at).strftime("%Y-%m-%d %H:%M")
            click.echo(f"{at}  {m.template_key}  {m.channel}  {m.status}\n  "
                       f"{message_text(session, m)[1]}")
        append(session, actor="cli", action="outbox.read", object_type="patient",
               object_id=patient_id, patient_id=patient_id, details={"messages": len(rows)})
    if not rows:
        click.echo(f"no messages for patient {patient_id}")


def commands() -> list[click.Command]:
    return [scheduler, events, apikey, flows]
