"""The ``consult_desk`` kind: where a department's patients' questions go, and how fast.

    kind: consult_desk                              ConsultDeskSpec(key="cardiology",
    key: cardiology                           ──▶       department="cardiology",
    department: cardiology                              answered_by={"role": "doctor"},
    answered_by: {role: doctor}                         working_hours=4.0, calendar=None,
    sla: {working_hours: 4}                             escalate_to=({"role": "dept_director"},),
    escalate_to: [{role: dept_director}]                canned=(CannedAnswer("bp_diary", …),))
    canned_answers: [{key: bp_diary, title: …, text: …}]

``answered_by`` and ``escalate_to`` are the assignee rules tasks use
(:func:`careloop.engine.tasks.resolve_assignee`): a question becomes a task of kind ``consult``
whose due time is the answer time in working hours, and the deadline sweep moves an unanswered
one up ``escalate_to`` like any overdue task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import NotFound
from careloop.engine.i18n import pick

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CannedAnswer:
    """An answer staff choose by its title; the patient reads ``text`` in their language."""

    key: str
    title: Pairs
    text: Pairs

    def title_in(self, locale: str) -> str:
        return pick(dict(self.title), locale)

    def text_in(self, locale: str) -> str:
        return pick(dict(self.text), locale)


@dataclass(frozen=True, slots=True)
class ConsultDeskSpec:
    """A compiled consult desk."""

    key: str
    title: Pairs
    department: str
    answered_by: tuple[tuple[str, str], ...]
    working_hours: float
    calendar: str | None
    escalate_to: tuple[tuple[tuple[str, Any], ...], ...]
    canned: tuple[CannedAnswer, ...] = ()

    def title_in(self, locale: str) -> str:
        return pick(dict(self.title), locale)

    def assignee_rule(self) -> dict[str, Any]:
        rule = dict(self.answered_by)
        if "role" in rule:
            rule.setdefault("department", self.department)
        return rule

    def chain(self) -> list[dict[str, Any]]:
        """The escalation chain a consult's task is created with (its due in hours)."""
        return [{**dict(level), "department": dict(level).get("department") or self.department}
                for level in self.escalate_to]

    def canned_answer(self, key: str) -> CannedAnswer | None:
        return next((c for c in self.canned if c.key == key), None)


def compile_consult_desk(definition: Definition, ctx: CompileContext) -> ConsultDeskSpec | None:
    """Check canned answers (unique keys, Chinese text) and the calendar reference."""
    doc, body = definition.doc, definition.body
    ok = True
    seen: set[str] = set()
    canned = []
    for i, item in enumerate(body.get("canned_answers") or []):
        if item["key"] in seen:
            ctx.add(doc.problem("consult.duplicate-canned-answer",
                                f"canned answer key '{item['key']}' is used twice",
                                ("canned_answers", i, "key")))
            ok = False
        seen.add(item["key"])
        for part in ("title", "text"):
            if "zh-CN" not in item[part]:
                ctx.add(doc.problem("consult.canned-answer-language",
                                    f"canned answer '{item['key']}' has no zh-CN {part}",
                                    ("canned_answers", i, part),
                                    hint="the patient reads zh-CN first; add it"))
                ok = False
        canned.append(CannedAnswer(item["key"], tuple(item["title"].items()),
                                   tuple(item["text"].items())))
    sla = body["sla"]
    if sla.get("calendar"):
        ctx.reference("calendar", sla["calendar"], doc, ("sla", "calendar"),
                      code="consult.unknown-calendar")
    if not ok:
        return None
    return ConsultDeskSpec(
        key=definition.key, title=tuple(dict(body["title"]).items()),
        department=body["department"], answered_by=tuple(body["answered_by"].items()),
        working_hours=float(sla["working_hours"]), calendar=sla.get("calendar"),
        escalate_to=tuple(tuple(level.items()) for level in body["escalate_to"]),
        canned=tuple(canned))


def load(session: Session, key: str) -> ConsultDeskSpec:
    """The current version of a consult desk.

    Raises:
        NotFound: if there is no such desk.
    """
    row = store.get_version(session, "consult_desk", key, None)
    return store.compile_row(row, ConsultDeskSpec)


def all_desks(session: Session) -> list[ConsultDeskSpec]:
    """Every current consult desk, by key."""
    return sorted((store.compile_row(row, ConsultDeskSpec)
                   for row in store.list_current(session, "consult_desk")),
                  key=lambda spec: spec.key)


__all__ = ["CannedAnswer", "ConsultDeskSpec", "NotFound", "all_desks", "compile_consult_desk",
           "load"]
