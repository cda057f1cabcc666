"""The ``checkup_package`` kind: the health-management centre's health-check packages (体检套餐),
shown to patients on their page, and a patient's booking request, which becomes a task for the
centre's staff.

    kind: checkup_package                          CheckupPackageSpec(key="basic_checkup",
    key: basic_checkup                       ──▶       items=(("zh-CN": "血常规", …), …),
    title: {zh-CN: 基础体检套餐, en: …}                 price=…, department="health_management",
    items: [{zh-CN: 血常规, en: Blood count}, …]        handled_by_role="nurse", …)
    price: {zh-CN: ¥480, en: CNY 480}
    department: health_management
    handled_by: {role: nurse}

    request_booking(session, card, "basic_checkup")
        → task "体检套餐预约：基础体检套餐" for the centre's nurses (once per patient and package
          while it is open: a second tap on the button adds nothing)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import audit, store
from careloop.engine.check import CompileContext, Definition
from careloop.engine.domain import Task
from careloop.engine.i18n import pick
from careloop.engine.tasks import Assignee, create_task
from careloop.flows.health.models import HealthCard

Text = tuple[tuple[str, str], ...]
TASK_KIND = "checkup_booking"


@dataclass(frozen=True, slots=True)
class CheckupPackageSpec:
    """A compiled health-check package."""

    key: str
    title: Text
    items: tuple[Text, ...]
    price: Text
    department: str
    handled_by_role: str
    handled_by_department: str
    description: Text = ()
    order: int = 100

    def words(self, locale: str) -> dict[str, Any]:
        """The package as a patient reads it."""
        return {"key": self.key, "title": pick(dict(self.title), locale),
                "description": pick(dict(self.description), locale) if self.description else "",
                "items": [pick(dict(item), locale) for item in self.items],
                "price": pick(dict(self.price), locale)}


def _text(value: Any) -> Text:
    return tuple(dict(value).items()) if isinstance(value, dict) else (("zh-CN", str(value)),)


def compile_checkup_package(definition: Definition,
                            ctx: CompileContext) -> CheckupPackageSpec | None:
    """Structure is the schema's; nothing here references another definition."""
    body = definition.body
    handled = body["handled_by"]
    return CheckupPackageSpec(
        key=definition.key, title=_text(body["title"]),
        items=tuple(_text(item) for item in body["items"]), price=_text(body["price"]),
        department=body["department"], handled_by_role=handled["role"],
        handled_by_department=handled.get("department") or body["department"],
        description=_text(body["description"]) if body.get("description") else (),
        order=int(body.get("order", 100)))


def catalogue(session: Session, department: str | None = None) -> list[CheckupPackageSpec]:
    """The current packages (of one department, when named), in catalogue order."""
    found = [store.compile_row(row, CheckupPackageSpec)
             for row in store.list_current(session, "checkup_package")]
    return sorted((p for p in found if department is None or p.department == department),
                  key=lambda p: (p.order, p.key))


def load(session: Session, key: str) -> CheckupPackageSpec:
    """Raises:
        NotFound: if there is no such package.
    """
    row = store.get_version(session, "checkup_package", key, None)
    return store.compile_row(row, CheckupPackageSpec)


def request_booking(session: Session, card: HealthCard, key: str) -> tuple[Task, bool]:
    """The patient asked to book a package: a task for the people who take bookings (once per
    patient and package while open); audited with the patient as actor. Returns
    ``(task, created)``.

    Raises:
        NotFound: for an unknown package.
    """
    package = load(session, key)
    open_task = session.scalars(select(Task).where(
        Task.patient_id == card.patient_id, Task.kind == TASK_KIND,
        Task.source_ref == f"checkup_package:{key}",
        Task.status.in_(("open", "in_progress")))).first()
    if open_task is not None:
        return open_task, False
    title = pick(dict(package.title), "zh-CN")
    task, created = create_task(
        session, title=f"体检套餐预约：{title}", kind=TASK_KIND, actor="patient",
        patient_id=card.patient_id, priority="normal",
        assignee=Assignee(None, package.handled_by_role, package.handled_by_department),
        source_type="checkup_package", source_ref=f"checkup_package:{key}",
        details={"package": key, "card_no": card.card_no,
                 "package_title": dict(package.title)})
    audit.append(session, actor="patient", action="checkup.booking_requested",
                 object_type="task", object_id=str(task.id), patient_id=card.patient_id,
                 details={"package": key})
    return task, created
