"""Access tokens cached in the database and shared by every process.

A provider (WeChat, WeCom) gives an access token for about two hours and limits how often one
may be fetched; each new fetch invalidates the previous token after a few minutes. So a token
lives in ``channel_tokens`` (never in process memory, never in a log line), and only one process
at a time fetches a new one:

    cached and not expiring, and not the token the provider just refused? ──▶ use it
    otherwise take the refresh lease (one conditional UPDATE on the row) ──▶ fetch ──▶ store
    the lease is someone else's ──▶ wait (bounded) for the row's version to change, then use it

A process that died holding the lease loses it when ``refreshing_until`` passes.
"""

from __future__ import annotations

import os
import socket
import time as monotime
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from careloop.engine.clock import now_utc
from careloop.engine.db import default_engine, transaction
from careloop.flows.channel import ChannelError
from careloop.flows.wechat.models import ChannelToken

EARLY = timedelta(minutes=5)  # refresh this long before the provider's expiry
LEASE = timedelta(seconds=30)
# how long a process waits for another one's refresh: less than a send's time limit
# (Channel.timeouts.total), so a slow refresh elsewhere ends as a retry, never as an unknown send
WAIT_SECONDS = 12.0
POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Fetched:
    token: str
    expires_in: int  # seconds


Fetch = Callable[[], Fetched]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _ensure_row(engine: Engine, channel_type: str, app_id: str) -> None:
    with transaction(engine) as session:
        found = session.scalars(select(ChannelToken.id).where(
            ChannelToken.channel_type == channel_type, ChannelToken.app_id == app_id)).first()
        if found is not None:
            return
    try:
        with transaction(engine) as session:
            session.add(ChannelToken(channel_type=channel_type, app_id=app_id, version=0))
    except IntegrityError:
        pass  # another process made it first


def _read(engine: Engine, channel_type: str,
          app_id: str) -> tuple[str | None, datetime | None, int]:
    with transaction(engine) as session:
        row = session.execute(select(ChannelToken.token, ChannelToken.expires_at,
                                     ChannelToken.version).where(
            ChannelToken.channel_type == channel_type, ChannelToken.app_id == app_id)).one()
        return row[0], row[1], int(row[2])


def access_token(channel_type: str, app_id: str, fetch: Fetch, *, refused: str | None = None,
                 engine: Engine | None = None) -> str:
    """The current access token of ``app_id`` on ``channel_type``; fetched with ``fetch`` by
    this process only if no other process is fetching one. ``refused`` is a token the provider
    just called invalid or expired: it is not used again.

    Raises:
        ChannelError: ``wechat_token`` when no token could be had in bounded time; whatever
            ``fetch`` raises.
    """
    engine = engine or default_engine()
    _ensure_row(engine, channel_type, app_id)
    deadline = monotime.monotonic() + WAIT_SECONDS
    seen_version: int | None = None
    while True:
        token, expires_at, version = _read(engine, channel_type, app_id)
        now = now_utc()
        usable = (token is not None and token != refused and expires_at is not None
                  and expires_at - EARLY > now)
        if usable and token is not None:
            return token
        if seen_version is not None and version != seen_version and token is not None \
                and token != refused:
            return token  # another process refreshed while we waited
        seen_version = version if seen_version is None else seen_version
        if _take_lease(engine, channel_type, app_id, version, now):
            return _refresh(engine, channel_type, app_id, version, fetch)
        if monotime.monotonic() > deadline:
            raise ChannelError("no access token: another process's refresh did not finish",
                               "wechat_token")
        monotime.sleep(POLL_SECONDS)


def _take_lease(engine: Engine, channel_type: str, app_id: str, version: int,
                now: datetime) -> bool:
    with transaction(engine) as session:
        taken = session.execute(update(ChannelToken).where(
            ChannelToken.channel_type == channel_type, ChannelToken.app_id == app_id,
            ChannelToken.version == version,
            or_(ChannelToken.refreshing_until.is_(None), ChannelToken.refreshing_until < now))
            .values(refreshing_until=now + LEASE, refreshed_by=worker_name()))
        return int(taken.rowcount) == 1  # type: ignore[attr-defined]


def _refresh(engine: Engine, channel_type: str, app_id: str, version: int,
             fetch: Fetch) -> str:
    try:
        fetched = fetch()
    except BaseException:
        with transaction(engine) as session:  # give the lease back at once
            session.execute(update(ChannelToken).where(
                ChannelToken.channel_type == channel_type, ChannelToken.app_id == app_id,
                ChannelToken.version == version).values(refreshing_until=None))
        raise
    now = now_utc()
    with transaction(engine) as session:
        session.execute(update(ChannelToken).where(
            ChannelToken.channel_type == channel_type, ChannelToken.app_id == app_id,
            ChannelToken.version == version).values(
            token=fetched.token, expires_at=now + timedelta(seconds=max(60, fetched.expires_in)),
            version=version + 1, refreshing_until=None, refreshed_by=worker_name(),
            refreshed_at=now))
    return fetched.token
