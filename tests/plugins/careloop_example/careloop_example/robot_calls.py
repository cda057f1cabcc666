"""A table of its own: the phone robot's calls (one row per call placed to a patient).

What a plugin writes to keep state in the database (docs/architecture.md, "Adding a table and
migration"): a model on the shared ``Base`` (so foreign keys to core tables resolve), the module
named by the ``model_modules`` hook, and an Alembic branch of its own under ``migrations/`` named
by ``migration_locations``. ``careloop db upgrade`` then creates the table; downgrading the branch
``careloop_example@base`` removes it and leaves the core schema as it was.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.hookspecs import hookimpl
from careloop.engine.models import Base, utcnow

#: The Alembic branch of this package (``careloop db upgrade`` applies it with every other head).
BRANCH = "careloop_example"


class RobotCall(Base):
    """One call the phone robot placed. ``outcome`` is a code (``answered``, ``no_answer``,
    ``busy``…) the robot's webhook reports; no transcript or phone number is kept here."""

    __tablename__ = "robot_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(64), ForeignKey("patients.id"), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[str | None] = mapped_column(String(32))
    placed_at: Mapped[datetime] = mapped_column(default=utcnow)


@hookimpl
def model_modules() -> list[str]:
    return [__name__]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop_example:migrations"]
