"""CLI: ``careloop outbox status``, ``careloop outbox retry ID… | --dead``, ``careloop outbox
cancel ID…``, ``careloop outbox confirm ID…`` (each change audited)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
from sqlalchemy.orm import Session

from careloop.flows.models import OutboxMessage


@click.group()
def outbox() -> None:
    """Outbound messages: states, dead letters, resend and cancel."""


@outbox.command("status")
def status() -> None:
    """Messages by state and the open delivery incidents."""
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction
    from careloop.flows import outbox as box

    with transaction() as session:
        for name, count in sorted(box.counts_by_status(session).items()):
            click.echo(f"{name}\t{count}")
        for incident in box.open_incidents(session):
            click.echo(f"incident {incident.id}: channel {incident.channel}, "
                       f"{incident.dead_count} dead letter(s) since "
                       f"{to_local(incident.opened_at):%Y-%m-%d %H:%M} ({incident.reason})")
        offered = len(box.recovered_dead(session))
    if offered:
        click.echo(f"{offered} dead letter(s) can be resent: careloop outbox retry --dead")
    for line in channel_configuration():
        click.echo(line)


def channel_configuration() -> list[str]:
    """Each message channel, the channel type that sends it and whether its options (as the
    environment sets them) pass the type's ``options_schema``."""
    from careloop.engine.registry import loaded_registry
    from careloop.flows.channel import ChannelError
    from careloop.flows.outbox import channel_for

    lines = []
    for name in loaded_registry().catalogue("channel").names():
        try:
            channel = channel_for(name)
            channel.options()
            lines.append(f"channel {name}: {channel.name} ok")
        except ChannelError as exc:
            lines.append(f"channel {name}: {exc.reason}: {exc}")
    return lines


def _each(ids: tuple[int, ...], action: str,
          act: Callable[[Session, int], OutboxMessage], actor: str) -> None:
    from careloop.engine.audit import append
    from careloop.engine.db import transaction
    from careloop.flows.outbox import OutboxError

    failed = 0
    for message_id in ids:
        try:
            with transaction() as session:
                row = act(session, message_id)
                append(session, actor=actor, action=f"outbox.{action}",
                       object_type="outbox_message", object_id=str(message_id),
                       patient_id=row.patient_id)
            click.echo(f"message {message_id}: {row.status}")
        except OutboxError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--dead", is_flag=True, help="Resend every dead letter still within its validity "
                                           "on a channel that has recovered.")
@click.option("--actor", default="cli", show_default=True)
def retry(ids: tuple[int, ...], dead: bool, actor: str) -> None:
    """Send messages again (dead letters, unknown outcome, expired, cancelled)."""
    from careloop.engine.audit import append
    from careloop.engine.db import transaction
    from careloop.flows import outbox as box

    if dead:
        with transaction() as session:
            resent = box.resend_recovered(session)
            append(session, actor=actor, action="outbox.resend_recovered",
                   object_type="outbox_message", details={"messages": resent[:500]})
        click.echo(f"{len(resent)} dead letter(s) will be sent again")
    if not ids and not dead:
        raise click.UsageError("give message ids or --dead")
    _each(ids, "resend", box.resend, actor)


@outbox.command("cancel")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--actor", default="cli", show_default=True)
def cancel(ids: tuple[int, ...], actor: str) -> None:
    """Cancel pending messages, dead letters or messages of unknown outcome."""
    from careloop.flows import outbox as box

    _each(ids, "cancel", box.cancel, actor)


@outbox.command("confirm")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--actor", default="cli", show_default=True)
def confirm(ids: tuple[int, ...], actor: str) -> None:
    """A message of unknown outcome did arrive (checked by a person): mark it sent."""
    from careloop.flows import outbox as box

    _each(ids, "confirm", box.confirm_delivered, actor)
