"""The ``education`` kind: health-education articles, videos and PDFs, and which fit a patient.

    kind: education                              EducationSpec(key="hypertension_low_salt_diet",
    key: hypertension_low_salt_diet        ──▶       format="article", department="cardiology",
    format: article                                  diseases=("I10-I15",),
    department: cardiology                           stages=("discharge_day1",), …)
    diseases: [I10-I15]
    stages: [discharge_day1]
    body: {zh-CN: "## 每天吃多少盐 …"}

An item is a definition like a form: a department edits it in the builder, publishing makes a
new version and never changes a published one. A video or PDF names its uploaded file by the
file's SHA-256 (``media``); the file itself is kept in the database (:mod:`.education_send`),
so a published version always shows the same file.

:func:`matches` answers whether an item fits a patient (diagnosis codes of the encounter, its
department and the stage of care); :func:`pick` lists the fitting items, newest key order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.check import CompileContext, Definition

FORMATS = ("article", "video", "pdf")
_CATEGORY = re.compile(r"^([A-Z])([0-9]{2})")


@dataclass(frozen=True, slots=True)
class EducationSpec:
    """A compiled education item."""

    key: str
    title: tuple[tuple[str, str], ...]
    format: str
    department: str
    stages: tuple[str, ...]
    diseases: tuple[str, ...] = ()
    audience_departments: tuple[str, ...] = ()
    body: tuple[tuple[str, str], ...] = ()
    media: str | None = None
    minutes: int | None = None

    def text(self, locale: str) -> str:
        """The body in ``locale``, else in the first language written."""
        bodies = dict(self.body)
        return bodies.get(locale) or next(iter(bodies.values()), "")

    def fits(self, codes: Iterable[str], department: str | None, stage: str) -> bool:
        """Whether the item is for a patient with these diagnoses, of this department, now."""
        if stage not in self.stages:
            return False
        if self.audience_departments and department not in self.audience_departments:
            return False
        return not self.diseases or any(matches(self.diseases, code) for code in codes)


def matches(patterns: Iterable[str], code: str) -> bool:
    """Whether an ICD-10 ``code`` falls under one of ``patterns``: a code or prefix (``I10``,
    ``E11.5``) or a range of categories (``I10-I15``, both ends included).

    >>> matches(["I10-I15"], "I11.900"), matches(["E11.5"], "E11.501"), matches(["I10"], "I20")
    (True, True, False)
    """
    code = code.strip().upper()
    for pattern in patterns:
        low, _, high = pattern.partition("-")
        if high:
            found = _CATEGORY.match(code)
            if found is not None and low <= found.group(0) <= high:
                return True
        elif code.startswith(pattern.upper()):
            return True
    return False


def compile_education(definition: Definition, ctx: CompileContext) -> EducationSpec | None:
    """Check what the schema cannot say: an article has a body, a video or PDF its file, a range
    runs forwards."""
    doc, body = definition.doc, definition.body
    ok = True
    if body["format"] == "article" and not body.get("body"):
        ctx.add(doc.problem("education.missing-body", "an article needs its text in 'body'",
                            ("format",), hint="write the article in body: {zh-CN: …}"))
        ok = False
    if body["format"] != "article" and not body.get("media"):
        ctx.add(doc.problem("education.missing-media",
                            f"a {body['format']} needs its uploaded file in 'media'",
                            ("format",),
                            hint="upload the file on the education library page and copy "
                                 "its reference"))
        ok = False
    for i, pattern in enumerate(body.get("diseases") or ()):
        low, _, high = pattern.partition("-")
        if high and low[:3] > high:
            ctx.add(doc.problem("education.bad-disease",
                                f"the range '{pattern}' ends before it starts",
                                ("diseases", i), hint=f"write {high}-{low[:3]}"))
            ok = False
    if not ok:
        return None
    return EducationSpec(
        key=definition.key, title=tuple(dict(body["title"]).items()), format=body["format"],
        department=body["department"], stages=tuple(body["stages"]),
        diseases=tuple(body.get("diseases") or ()),
        audience_departments=tuple(body.get("audience_departments") or ()),
        body=tuple(dict(body.get("body") or {}).items()), media=body.get("media"),
        minutes=body.get("minutes"))


def load(session: Session, key: str, version: int | None = None) -> EducationSpec:
    """One version of an item (the current one by default).

    Raises:
        NotFound: if there is no such item.
    """
    return store.compile_row(store.get_version(session, "education", key, version),
                             EducationSpec)


def current(session: Session) -> list[tuple[int, EducationSpec]]:
    """Every current item with its version, by key."""
    rows = store.list_current(session, "education")
    return sorted(((row.version, store.compile_row(row, EducationSpec)) for row in rows),
                  key=lambda pair: pair[1].key)


def pick(session: Session, *, codes: Sequence[str], department: str | None, stage: str,
         only: Sequence[str] = ()) -> list[tuple[int, EducationSpec]]:
    """The current items that fit (``only``: among these keys, in that order)."""
    found = [(v, s) for v, s in current(session) if s.fits(codes, department, stage)]
    if only:
        order = {key: i for i, key in enumerate(only)}
        found = sorted((p for p in found if p[1].key in order), key=lambda p: order[p[1].key])
    return found


__all__ = ["FORMATS", "EducationSpec", "compile_education", "current", "load", "matches",
           "pick"]
