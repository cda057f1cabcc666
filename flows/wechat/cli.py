"""CLI: ``careloop wecom link USERNAME USERID`` (the staff member's WeCom account, where their
notifications on the ``wecom`` channel go), ``careloop wecom unlink USERNAME``, ``careloop wecom
list``. Each change is audited."""

from __future__ import annotations

import re
import sys

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.domain import User
from careloop.flows.wechat.models import StaffAddress

CHANNEL = "wecom"
USERID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@click.group()
def wecom() -> None:
    """Staff members' WeCom accounts (企业微信账号) for staff notifications."""


def _user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        click.echo(f"no user '{username}'", err=True)
        sys.exit(2)
    return user


@wecom.command("link")
@click.argument("username")
@click.argument("userid")
def link(username: str, userid: str) -> None:
    """Send USERNAME's staff notifications to the WeCom account USERID."""
    from careloop.engine import audit
    from careloop.engine.db import transaction

    if not USERID.match(userid):
        click.echo(f"USERID: '{userid}' is not a WeCom account (letters, digits, _ . @ -; "
                   "at most 64)", err=True)
        sys.exit(2)
    with transaction() as session:
        user = _user(session, username)
        row = session.scalars(select(StaffAddress).where(
            StaffAddress.user_id == user.id, StaffAddress.channel == CHANNEL)).first()
        if row is None:
            session.add(StaffAddress(user_id=user.id, channel=CHANNEL, address=userid))
        else:
            row.address = userid
        audit.append(session, actor="cli", action="user.wecom_linked", object_type="user",
                     object_id=str(user.id),
                     details={"zh-CN": f"{user.display_name}的企业微信账号已设置",
                              "en": f"{user.display_name}'s WeCom account was set"})
    click.echo(f"{username}: WeCom account {userid}")


@wecom.command("unlink")
@click.argument("username")
def unlink(username: str) -> None:
    """Stop sending USERNAME's notifications to WeCom."""
    from careloop.engine import audit
    from careloop.engine.db import transaction

    with transaction() as session:
        user = _user(session, username)
        row = session.scalars(select(StaffAddress).where(
            StaffAddress.user_id == user.id, StaffAddress.channel == CHANNEL)).first()
        if row is not None:
            session.delete(row)
            audit.append(session, actor="cli", action="user.wecom_unlinked",
                         object_type="user", object_id=str(user.id),
                         details={"zh-CN": f"{user.display_name}的企业微信账号已移除",
                                  "en": f"{user.display_name}'s WeCom account was removed"})
    click.echo(f"{username}: no WeCom account")


@wecom.command("list")
def listing() -> None:
    """Every staff member with a WeCom account."""
    from careloop.engine.db import transaction

    with transaction() as session:
        for username, address in session.execute(
                select(User.username, StaffAddress.address).join(
                    StaffAddress, StaffAddress.user_id == User.id)
                .where(StaffAddress.channel == CHANNEL).order_by(User.username)).all():
            click.echo(f"{username}\t{address}")
