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
    """Fire due timers, emit task.overdue, dispatch due messages. Due timers it could not fire
    because another sweep holds their claim (one running elsewhere, or one that crashed) are
    counted under ``claimed``, with when those claims expire, and named on stderr."""
    from careloop.engine.clock import now_utc, to_local
    from careloop.engine.db import default_engine
    from careloop.flows.scheduler import held_claims, run_due

    now = None
    if now_text:
        try:
            now = datetime.fromisoformat(now_text)
        except ValueError:
            raise click.BadParameter(f"not an ISO date-time: {now_text!r}",
                                     param_hint="'--now'") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=hospital_tz())
    now = now or now_utc()
    report = run_due(now=now, batch=batch)
    held = held_claims(default_engine(), now)
    click.echo(json.dumps({**report.to_json(), "claimed": held.to_json()}, ensure_ascii=False))
    if held.count and held.first_expiry and held.last_expiry:
        first, last = to_local(held.first_expiry), to_local(held.last_expiry)
        click.echo(f"{held.count} due timer(s) not fired: claimed by {held.workers} other "
                   f"sweep(s), running elsewhere or stopped; the claims expire between "
                   f"{first:%Y-%m-%d %H:%M:%S} and {last:%Y-%m-%d %H:%M:%S} (hospital time) and "
                   "the first run-due after that fires them", err=True)


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
            click.echo(f"{file}:{number}: {body['event_id']} {body['message']}: "
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
    """API keys of systems calling /api/v1 (the HIS): create, list, revoke."""


@apikey.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, default=("events:write",), show_default=True,
              help="events:write | readback:read | incidents:write | metrics:read | "
                   "fhir:write | fhir:read "
                   "(repeat for several)")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="days until the key stops working")
def apikey_create(name: str, scopes: tuple[str, ...], expires_days: int) -> None:
    """Create a key named NAME and print it once (only its hash is stored); audited."""
    from datetime import timedelta

    from careloop.engine import audit
    from careloop.engine.clock import now_utc
    from careloop.engine.db import transaction
    from careloop.flows.ingest import ApiKeyError, create_api_key

    try:
        with transaction() as session:
            expires = now_utc() + timedelta(days=expires_days)
            key = create_api_key(session, name, scopes=scopes, expires_at=expires,
                                 created_by="cli")
            audit.append(session, actor="cli", action="apikey.create", object_type="api_key",
                         object_id=name, details={"scopes": sorted(set(scopes)),
                                                  "expires_at": expires.isoformat()})
    except ApiKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(key)


@apikey.command("list")
def apikey_list() -> None:
    """List the keys: name, prefix, scopes, state, expiry and last use (hospital time)."""
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction
    from careloop.flows.ingest import key_state, list_api_keys, scopes_of

    def local(value: object) -> str:
        from datetime import datetime

        return to_local(value).strftime("%Y-%m-%d %H:%M") \
            if isinstance(value, datetime) else "-"

    with transaction() as session:
        for key in list_api_keys(session):
            click.echo(f"{key.name}\t{key.prefix}…\t{','.join(scopes_of(key))}\t"
                       f"{key_state(key)}\texpires {local(key.expires_at)}\t"
                       f"last used {local(key.last_used_at)}")


@apikey.command("revoke")
@click.argument("name")
def apikey_revoke(name: str) -> None:
    """Revoke the key named NAME (it stops working at once); audited."""
    from careloop.engine import audit
    from careloop.engine.db import transaction
    from careloop.flows.ingest import ApiKeyError, revoke_api_key

    try:
        with transaction() as session:
            revoke_api_key(session, name)
            audit.append(session, actor="cli", action="apikey.revoke", object_type="api_key",
                         object_id=name)
    except ApiKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"revoked {name}")


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


@flows.command("allow-host")
@click.argument("host")
@click.option("--allow-private", is_flag=True,
              help="Let the host resolve to a private, loopback or link-local address (an HIS "
                   "inside the hospital network).")
@click.option("--note", default=None, help="Why the host is listed.")
@click.option("--actor", default="cli", show_default=True)
def allow_host(host: str, allow_private: bool, note: str | None, actor: str) -> None:
    """Put a host on the outbound allow-list (call_webhook steps reach only listed hosts)."""
    from careloop.engine.audit import append
    from careloop.engine.db import transaction
    from careloop.flows import egress

    try:
        with transaction() as session:
            row = egress.allow(session, host, allow_private=allow_private, note=note,
                               actor=actor)
            append(session, actor=actor, action="outbound.allow", object_type="outbound_host",
                   object_id=row.host, details={"host": row.host,
                                                "allow_private": allow_private})
    except egress.EgressRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{row.host}: allowed" + (" (private addresses too)" if allow_private else ""))


@flows.command("disallow-host")
@click.argument("host")
@click.option("--actor", default="cli", show_default=True)
def disallow_host(host: str, actor: str) -> None:
    """Take a host off the outbound allow-list."""
    from careloop.engine.audit import append
    from careloop.engine.db import transaction
    from careloop.flows import egress

    with transaction() as session:
        removed = egress.disallow(session, host)
        if removed:
            append(session, actor=actor, action="outbound.disallow",
                   object_type="outbound_host", object_id=egress.normal_host(host),
                   details={"host": egress.normal_host(host)})
    if not removed:
        click.echo(f"error: {host} is not on the allow-list", err=True)
        sys.exit(1)
    click.echo(f"{egress.normal_host(host)}: removed")


@flows.command("allowed-hosts")
def allowed_hosts() -> None:
    """List the outbound allow-list."""
    from careloop.engine.db import transaction
    from careloop.flows import egress

    with transaction() as session:
        rows = [(h.host, h.allow_private, h.note or "") for h in egress.allowed_hosts(session)]
    if not rows:
        click.echo("the allow-list is empty: every outbound call is refused")
    for host, private, note in rows:
        click.echo(f"{host}\t{'private allowed' if private else 'public only'}\t{note}")


def commands() -> list[click.Command]:
    from careloop.flows.cli_outbox import outbox
    from careloop.flows.inbound.cli import commands as inbound
    from careloop.flows.inbound.hl7_cli import hl7

    return [scheduler, events, apikey, flows, outbox, *inbound(), hl7]
