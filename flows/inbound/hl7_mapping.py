"""The ``hl7_mapping`` kind: which HL7 v2 fields become which event fields, and the code tables.

    patient:   {patient_id: PID-3.1, gender: {field: PID-8, table: sex}, …}
    encounter: {department_id: {field: PV1-3.1.1, table: departments}, …}
    tables:    {departments: {"HUH AE OMU": cardiology}, sex: {M: male, …}}

A location is ``SEG-field[.component[.sub-component]]`` (first repetition, first occurrence of
the segment; OBX and DG1 are read in every occurrence). A code not found in the table named by a
``table`` is a located error (``PID-8``), except for ``departments``: a HIS code not listed there
is taken as the Careloop department id itself, and an unknown one is refused (or parked) by the
events intake like any unknown code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.check import CompileContext, Definition

DEFAULT_KEY = "default"
_BUNDLED = "app_definitions/common/hl7_mappings/default.yaml"
# Tables whose unknown codes pass through unchanged (the events intake checks them).
PASS_THROUGH = frozenset({"departments", "wards"})
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})-([0-9]{1,3})(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?$")
SECTIONS = ("patient", "encounter", "merge", "observation")


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One mapped field: ``PV1-3.1.1`` read through the ``departments`` table."""

    location: str
    segment: str
    field: int
    component: int
    sub: int
    table: str | None = None

    @classmethod
    def parse(cls, spec: Any) -> FieldRef:
        text, table = (spec, None) if isinstance(spec, str) else (spec["field"], spec.get("table"))
        found = _LOCATION.match(text)
        if found is None:
            raise ValueError(f"not a segment field: {text!r} (e.g. PID-3.1)")
        seg, field, comp, sub = found.groups()
        return cls(text, seg, int(field), int(comp or 1), int(sub or 1), table)


@dataclass(frozen=True, slots=True)
class Hl7MappingSpec:
    """A compiled mapping."""

    key: str
    senders: frozenset[str]
    processing_ids: frozenset[str]
    sections: dict[str, dict[str, FieldRef]]
    tables: dict[str, dict[str, str]]

    def field(self, section: str, name: str) -> FieldRef | None:
        return self.sections.get(section, {}).get(name)


def _build(key: str, body: dict[str, Any]) -> Hl7MappingSpec:
    return Hl7MappingSpec(
        key=key, senders=frozenset(body.get("senders") or ()),
        processing_ids=frozenset(body.get("processing_ids") or ("P",)),
        sections={name: {field: FieldRef.parse(spec) for field, spec in body[name].items()}
                  for name in SECTIONS if isinstance(body.get(name), dict)},
        tables={name: {str(code): str(value) for code, value in table.items()}
                for name, table in (body.get("tables") or {}).items()})


def compile_hl7_mapping(definition: Definition, ctx: CompileContext) -> Hl7MappingSpec | None:
    """Check that every ``table`` a field names is defined under ``tables``."""
    doc, body = definition.doc, definition.body
    ok = True
    tables = body.get("tables") or {}
    for section in SECTIONS:
        for name, spec in (body.get(section) or {}).items():
            if isinstance(spec, dict) and spec.get("table") not in tables:
                ctx.add(doc.problem("hl7.unknown-table",
                                    f"no code table {spec.get('table')!r} under 'tables'",
                                    (section, name, "table"),
                                    hint="add it under tables: or name one that exists"))
                ok = False
    return _build(definition.key, body) if ok else None


@cache
def bundled_mapping() -> Hl7MappingSpec:
    """The default mapping shipped in ``app_definitions/common`` (no database needed)."""
    from careloop.engine.sources import load_text

    text = resources.files("careloop").joinpath(_BUNDLED).read_text("utf-8")
    return _build(DEFAULT_KEY, load_text(text, _BUNDLED).data)


def mapping_for(session: Session, sender: str) -> Hl7MappingSpec:
    """The stored mapping naming ``sender`` (MSH-3) in ``senders``, else the one keyed
    ``default``, else the bundled default."""
    from careloop.engine import store

    fallback: Hl7MappingSpec | None = None
    for row in store.list_current(session, "hl7_mapping"):
        spec = store.compile_row(row, Hl7MappingSpec)
        if sender and sender in spec.senders:
            return spec
        if spec.key == DEFAULT_KEY:
            fallback = spec
    return fallback or bundled_mapping()
