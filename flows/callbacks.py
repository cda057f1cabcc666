"""What a provider calls back: delivery receipts (SMS status reports), WeChat event pushes.

A channel type that hears from its provider implements :class:`CallbackChannel`: one method,
``callback(session, hook, request)``, given the request as plain data (:class:`Inbound`) and a
database session in a transaction, returning the provider's expected answer (:class:`Answer`).
The web runtime routes ``GET|POST /channels/<channel type>/<hook>`` to it
(``web/routes_channels.py``): nothing of the channel's lives in the web package, and a new
channel type (a plugin's, WeChat's) gets its endpoint by implementing the method — no route
to add. The channel verifies the request itself (a signature, a shared token: what its provider
offers) and answers :func:`refused` when it fails; it never logs a phone number or a text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

MAX_BODY = 1024 * 1024  # a provider's batch of reports; larger is refused unread


@dataclass(frozen=True, slots=True)
class Inbound:
    """The provider's request: ``headers`` with lower-case names, ``query`` single-valued."""

    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(value, ensure_ascii=False).encode("utf-8"))


def refused(status: int = 403) -> Answer:
    """The answer to a request that failed verification: no detail of why."""
    return Answer.json({"error": "refused"}, status)


@runtime_checkable
class CallbackChannel(Protocol):
    """A channel type with a callback endpoint (``/channels/<name>/<hook>``)."""

    def callback(self, session: Session, hook: str, request: Inbound) -> Answer:
        """Verify and record what the provider reports; unknown ``hook`` → ``Answer(404)``."""
        ...
