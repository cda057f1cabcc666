"""Tables of health management: the cards of patients registered by hand, and the booking-link
template of each department."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base


class HealthCard(Base):
    """A health-management card (健康管理卡): one per patient, its number unique in the hospital.

    ``page_token`` opens the patient's own page (``/hm/<token>``: the card, the booking link and
    the health-check packages); it is random and printed only on the patient's card sheet."""

    __tablename__ = "health_cards"

    card_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), unique=True)
    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"), index=True)
    page_token: Mapped[str] = mapped_column(String(43), unique=True)
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime]


class BookingLink(Base):
    """A department's booking link: the hospital's appointment-system URL with the patient's
    context in placeholders (``https://yy.example.cn/book?card={card_no}&dept={department}``)."""

    __tablename__ = "booking_links"

    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"), primary_key=True)
    template: Mapped[str] = mapped_column(String(500))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]
