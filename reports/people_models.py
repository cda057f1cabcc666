"""Tables of the people reports (per-doctor and per-nursing-group service quality).

* ``people_report_settings`` — one row: the minimum number of answers below which a person's
  figures are not shown (``min_sample``), who changed it and when;
* ``people_report_optins`` — a staff member who chose to see their own report (nobody else's);
* ``people_report_files`` — the monthly PDF of one department, made once per (department, month)
  by the ``reports.people_monthly`` tick and linked from the message to the department's heads.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, utcnow

DEFAULT_MIN_SAMPLE = 10


class PeopleReportSettings(Base):
    """The hospital's people-report settings (a single row, ``id`` 1)."""

    __tablename__ = "people_report_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    min_sample: Mapped[int] = mapped_column(Integer, default=DEFAULT_MIN_SAMPLE)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeopleReportOptIn(Base):
    """A staff member who opted in to see their own figures."""

    __tablename__ = "people_report_optins"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    opted_in_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeopleReportFile(Base):
    """One department's monthly PDF (``month`` is ``YYYY-MM``, hospital-local)."""

    __tablename__ = "people_report_files"
    __table_args__ = (UniqueConstraint("department_id", "month",
                                       name="uq_people_report_files_department_month"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    department_id: Mapped[str] = mapped_column(ForeignKey("departments.id"))
    month: Mapped[str] = mapped_column(String(7))
    min_sample: Mapped[int] = mapped_column(Integer)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
