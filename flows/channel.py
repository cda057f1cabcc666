"""The channel contract (issue 17): a channel type owns everything about how a message leaves.

A :class:`Channel` declares its label (zh-CN / en), the options it is configured with (a JSON
Schema whose properties name their environment variable with ``x-env``), whether the provider
recognises a repeated idempotency key (``idempotent``) or can be asked what became of one
(``lookup``), whether it sends delivery receipts, its connect / read time limits and its retry
policy (exponential backoff with jitter up to a **horizon**, after which a message is a dead
letter). The outbox (:mod:`careloop.flows.outbox`) never switches on a channel's name: it asks
the channel.

Built-ins (``log``, ``smtp``, ``webhook``: :mod:`careloop.flows.channels`) register in
``registry.catalogue("channel_adapter")`` exactly as a plugin's channel does (the recipe
"Adding a channel" in docs/architecture.md).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from jsonschema import Draft202012Validator

from careloop.engine.errors import CareloopError, Problem


class ChannelError(CareloopError):
    """Raised by a channel when sending failed. ``reason`` is a code the admin page puts in
    words; ``retryable=False`` (no address, a refusal the provider will repeat) makes the
    message a dead letter at once instead of retrying it."""

    def __init__(self, message: str, reason: str = "channel_error", *,
                 retryable: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Outbound:
    """What a channel receives: no database objects, only what it needs to send."""

    id: int
    idempotency_key: str
    channel: str
    patient_id: str | None
    address: str | None  # phone, e-mail address or gateway user id (never logged)
    subject: str | None
    body: str
    urgent: bool
    # this channel type's entry of the message template's ``providers`` (an SMS gateway's
    # template code and rendered parameters, a WeChat template's data), links opened; ``None``
    # when the template has none for this channel type
    provider: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one message: ``delivered`` (the provider accepted it for the patient),
    ``logged`` (recorded, nothing reached anyone: the ``log`` channel) or ``not_found`` (a
    :meth:`Channel.lookup` answer: the provider never received that key)."""

    status: Literal["delivered", "logged", "not_found"]
    provider_ref: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff ``base · 2^(attempt-1)`` capped at ``cap``, each delay spread by
    ``±jitter`` (so messages held up by one outage do not all come back in one second), until
    ``horizon`` after the first failure; then the message is a dead letter."""

    horizon: timedelta = timedelta(hours=6)
    base: timedelta = timedelta(minutes=1)
    cap: timedelta = timedelta(minutes=30)
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        raw = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        spread: float = (rng or random).uniform(-self.jitter, self.jitter)
        delay: timedelta = raw * (1 + spread)
        return delay


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect and to wait for an answer; a send taking longer than ``total`` is
    abandoned by the dispatcher (its outcome is then unknown)."""

    connect: float = 5.0
    read: float = 15.0
    margin: float = 5.0

    @property
    def total(self) -> float:
        return self.connect + self.read + self.margin


class Channel:
    """Base class of a channel type. A subclass sets the class attributes and :meth:`send`;
    one that can ask its provider about a key sets ``can_lookup`` and :meth:`lookup`."""

    name: ClassVar[str] = ""
    title: ClassVar[Mapping[str, str]] = {}
    options_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {},
                                                   "additionalProperties": False}
    idempotent: ClassVar[bool] = False  # the provider drops a second message with one key
    can_lookup: ClassVar[bool] = False  # lookup(key) asks the provider what became of a key
    receipts: ClassVar[bool] = False  # the provider reports delivery to the handset later
    delivers: ClassVar[bool] = True  # False: nothing reaches the patient (the log channel)
    # True: send() reaches no network and cannot hang (the log channel): the dispatcher calls it
    # directly, not in a worker thread bounded by ``timeouts.total``
    local: ClassVar[bool] = False
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timeouts: ClassVar[Timeouts] = Timeouts()
    # What a message template's ``providers.<this type>`` entry must look like (JSON Schema):
    # providers that send only approved templates (SMS gateways in China, WeChat template
    # messages) set it; ``None`` = the channel sends the rendered text and takes no entry.
    template_schema: ClassVar[Mapping[str, Any] | None] = None

    def send(self, message: Outbound, idempotency_key: str) -> SendResult:
        """Send one message; raise :class:`ChannelError` when it failed."""
        raise NotImplementedError

    def lookup(self, idempotency_key: str) -> SendResult:
        """What became of the message sent with ``idempotency_key`` (``can_lookup`` only);
        raise :class:`ChannelError` when the provider cannot be asked now."""
        raise ChannelError(f"channel {self.name} cannot be asked about a message",
                           "no_lookup")

    # --- options --------------------------------------------------------------------------

    def check_options(self, options: Mapping[str, Any],
                      path: tuple[str | int, ...] = ()) -> list[Problem]:
        """Every problem of ``options`` against :attr:`options_schema`, located by path."""
        validator = Draft202012Validator(dict(self.options_schema))
        return [Problem("flow.bad-channel-option",
                        f"channel {self.name}: {error.message}",
                        (*path, *error.absolute_path))
                for error in sorted(validator.iter_errors(dict(options)),
                                    key=lambda e: list(map(str, e.absolute_path)))]

    def check_template(self, entry: Any, path: tuple[str | int, ...] = ()) -> list[Problem]:
        """Every problem of a template's ``providers`` entry for this channel type."""
        if self.template_schema is None:
            return [Problem("template.provider-takes-no-template",
                            f"channel {self.name} sends the message text and takes no "
                            "provider template", path)]
        validator = Draft202012Validator(dict(self.template_schema))
        return [Problem("template.bad-provider-template",
                        f"channel {self.name}: {error.message}",
                        (*path, *error.absolute_path))
                for error in sorted(validator.iter_errors(entry),
                                    key=lambda e: list(map(str, e.absolute_path)))]

    def options(self) -> dict[str, Any]:
        """The options as configured in the environment (``x-env`` of each property, with the
        schema's ``default``); raises :class:`ChannelError` ``not_configured`` if invalid."""
        values: dict[str, Any] = {}
        for key, prop in (self.options_schema.get("properties") or {}).items():
            text = os.environ.get(str(prop.get("x-env", "")), "") if prop.get("x-env") else ""
            if text == "":
                if "default" in prop:
                    values[key] = prop["default"]
                continue
            values[key] = int(text) if prop.get("type") == "integer" and text.isdigit() \
                else text
        problems = self.check_options(values)
        if problems:
            raise ChannelError("; ".join(p.message for p in problems), "not_configured",
                               retryable=True)
        return values


def label(channel: Channel, locale: str) -> str:
    """The channel's name as a person reads it."""
    return str(channel.title.get(locale) or channel.title.get("en") or channel.name)
