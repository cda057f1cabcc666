"""Tables of the WeChat / WeCom channels (migration 0028)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow


class ChannelToken(Base):
    """A provider's access token, shared by every process (never in process memory, never
    logged). ``refreshing_until`` is the lease of the one process fetching a new token;
    ``version`` grows with each refresh."""

    __tablename__ = "channel_tokens"
    __table_args__ = (UniqueConstraint("channel_type", "app_id",
                                       name="uq_channel_tokens_type_app"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel_type: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[str] = mapped_column(String(64))
    token: Mapped[str | None] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=0)
    refreshing_until: Mapped[datetime | None]
    refreshed_by: Mapped[str | None] = mapped_column(String(128))
    refreshed_at: Mapped[datetime | None]


class WechatBinding(Base):
    """A one-time binding token printed (as a QR code) for one patient: scanning it makes the
    official account push an event carrying the token, which binds the scanner's openid."""

    __tablename__ = "wechat_bindings"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class StaffAddress(Base):
    """A staff member's address on a staff channel (their WeCom ``userid``)."""

    __tablename__ = "staff_addresses"
    __table_args__ = (UniqueConstraint("user_id", "channel", name="uq_staff_addresses_user"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(128))
