"""Demo: patients open the education links the shipped flow and rule sent them, and many read
to the end (the ``education`` demo seeder).

The sends themselves come from the demo's discharges through the ``education`` bundle (the day-1
flow, the PCI rule). After every sweep an actor looks at the links sent since and plans, for each,
what the patient does: most open it within a day, over half of those read to the end. Opening and
reading go through what the page's handlers call (``open_link`` + the message's link opening for
``GET /e/{token}``, ``mark_read`` for the page script's post), with the token as the message
carries it. Everything is synthetic.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

OPEN_SHARE = 0.75
READ_SHARE = 0.6
_TOKEN = re.compile(r"/e/([A-Za-z0-9_\-]{16,128})")


def _reader(token: str, to_end: bool) -> Any:
    def act(session: Session) -> None:
        from careloop.flows.education_send import mark_read, open_link
        from careloop.flows.receipts import record_open

        open_link(session, token)
        record_open(session, token)
        if to_end:
            mark_read(session, token)
    return act


def _actor(session: Session, rng: random.Random, context: dict[str, Any],
           at: datetime) -> None:
    from careloop.flows.education_models import EducationSend
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text
    from careloop.web.demo import timeline

    seen: set[int] = context.setdefault("education_seen", set())
    rows = session.execute(select(EducationSend.id, EducationSend.sent_at, OutboxMessage)
                           .join(OutboxMessage, OutboxMessage.id == EducationSend.message_id)
                           .where(EducationSend.status == "sent")).all()
    for send_id, sent_at, message in rows:
        if send_id in seen:
            continue
        if message.status in ("pending", "sending"):
            continue  # not out yet: looked at again after the next sweep
        seen.add(send_id)
        if message.status in ("failed", "cancelled", "suppressed", "expired"):
            continue
        if rng.random() >= OPEN_SHARE:
            continue
        found = _TOKEN.search(message_text(session, message)[1] or "")
        if found is None:
            continue
        when = sent_at + timedelta(minutes=rng.randint(5, 20 * 60))
        timeline(context).at(when, "education read", _reader(found.group(1),
                                                              rng.random() < READ_SHARE))


def seed_education(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Register the reading actor (the sends come from the bundle's flow and rule)."""
    from careloop.engine import store
    from careloop.web.demo import add_actor

    if not store.list_current(session, "education"):
        context.setdefault("skipped", []).append("education: bundle not imported")
        return
    add_actor(context, "education", _actor)
