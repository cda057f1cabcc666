"""What comes back after a message left: providers' delivery receipts and the patient's opening
of the link it carried.

A provider that reports delivery later (an SMS gateway's status report, a WeChat template
message's ``TEMPLATESENDJOBFINISH`` event) is heard by that channel type's receipt endpoint,
which verifies the provider's signature and calls :func:`record_receipt` with the provider's
reference for the message (``provider_ref``, what :meth:`Channel.send` returned). A receipt
never moves a message backwards: ``read`` outranks ``delivered`` and ``failed``; a repeated or
older report changes nothing. Opening a form or document link records ``opened_at`` on the
message that carried it (:func:`record_open`), found by the link's reference (never the token).

The outbox state (``sent``, ``dead`` …) says what Careloop did; the receipt says what the
provider saw at the handset. Both are shown on **管理 → 消息送达**.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from careloop.engine import links
from careloop.engine.clock import now_utc
from careloop.flows.models import OutboxMessage

ReceiptState = Literal["delivered", "failed", "read"]
RECEIPT_STATES: tuple[ReceiptState, ...] = ("delivered", "failed", "read")
_RANK = {None: 0, "failed": 1, "delivered": 1, "read": 2}


def record_receipt(session: Session, *, channel_type: str, provider_ref: str,
                   state: ReceiptState, at: datetime | None = None,
                   detail: str | None = None) -> int | None:
    """Record a provider's report on the message it knows as ``provider_ref``.

    ``channel_type`` is the reporting channel type's name (the provider's reference is unique
    only within it). Returns the message id, or ``None`` when no message of that channel type
    carries the reference (a report for another installation, or forged: the caller answers the
    provider normally and logs nothing personal). Idempotent; never moves a message backwards.
    """
    if state not in RECEIPT_STATES:
        raise ValueError(f"unknown receipt state {state!r}")
    rows = session.scalars(select(OutboxMessage).where(
        OutboxMessage.provider_ref == provider_ref).with_for_update()).all()
    row = next((r for r in rows if _sent_by(r, channel_type)), None)
    if row is None:
        return None
    when = at or now_utc()
    current = _RANK.get(row.receipt_state, 0)
    if _RANK[state] < current or (_RANK[state] == current and row.receipt_state is not None
                                  and row.receipt_at is not None and when <= row.receipt_at):
        return row.id
    row.receipt_state, row.receipt_at = state, when
    row.receipt_detail = (detail or "")[:255] or None
    return row.id


def _sent_by(row: OutboxMessage, channel_type: str) -> bool:
    """Whether ``row`` went out through ``channel_type``: the channel type configured for its
    message channel (a template names several providers; only the one that sent counts)."""
    from careloop.flows.outbox import channel_for

    try:
        return channel_for(row.channel).name == channel_type
    except Exception:  # no channel type configured: not this channel type's message
        return False


def record_open(session: Session, token: str) -> int:
    """The patient opened the link with ``token``: stamp the messages that carried it (first
    opening only). Returns how many messages were stamped."""
    ref = links.token_ref(token)
    # read first: a page view after the first writes nothing (on SQLite an UPDATE takes the
    # database's write lock even when it matches no row, and the patient page must not wait
    # behind the HIS's writers for that)
    unopened = session.scalars(select(OutboxMessage.id).where(
        OutboxMessage.link_ref == ref, OutboxMessage.opened_at.is_(None))).all()
    if not unopened:
        return 0
    result = session.execute(update(OutboxMessage).where(
        OutboxMessage.id.in_(unopened), OutboxMessage.opened_at.is_(None))
        .values(opened_at=now_utc()))
    return int(result.rowcount)  # type: ignore[attr-defined]
