"""The OBX segments of an ORU^R01: readings (charted) and laboratory results.

    OBX|1|NM|8480-6^收缩压^LN||150|mm[Hg]|90-139|H|||F|||20261207100000
        code in the mapping's ``observations`` table ──▶ reading.recorded (bp_systolic + …)
    OBX|1|SN|1554-5^GLUCOSE^POST 12H CFST:MCNC:PT:SER/PLAS:QN||^182|mg/dl|70_105|H|||F
        any other code ──▶ result.recorded {code, system, display, value, comparator, unit,
                           reference_range, abnormal_flag, status, observed_at}

The value is read by its type (OBX-2): NM a number; SN a structured numeric (``>^10`` → ``>``
10, ``^1^:^128`` → "1:128"); CE/CWE/CNE the text of the coded value; ST/TX/FT and the rest as
text. A result whose status (OBX-11) says there is none (X cannot be obtained, D deleted, W
wrong patient) is not recorded and counted in the ACK's informational note.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from careloop.flows.inbound.hl7_mapping import FieldRef

if TYPE_CHECKING:
    import hl7

    from careloop.flows.inbound.hl7 import _Reader

READING_PARTS = {"bp_systolic": "systolic", "bp_diastolic": "diastolic"}
# OBX-11 (HL7 table 0085) → result status; missing means final
STATUSES = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary",
            "S": "preliminary", "A": "amended", "": "final"}
NO_RESULT = frozenset({"X", "D", "W", "N", "I", "O"})
CODED = frozenset({"CE", "CWE", "CNE", "CF"})
LOINC_SYSTEMS = frozenset({"LN", "LOINC", "HTTP://LOINC.ORG"})
_RANGE = re.compile(r"^(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)$")


def number(text: str) -> float | int | None:
    try:
        found = float(text)
    except ValueError:
        return None
    if found != found or found in (float("inf"), float("-inf")):
        return None
    return int(found) if found.is_integer() and "." not in text else found


def _raw_field(msg: hl7.Message, ref: FieldRef, occurrence: int) -> str:
    """The whole field (every component) of the ``occurrence``-th segment, first repetition."""
    found = [s for s in msg if str(s[0]) == ref.segment]
    if occurrence > len(found) or ref.field >= len(found[occurrence - 1]):
        return ""
    return str(found[occurrence - 1][ref.field]).split(msg.separators[2])[0]  # 1st repetition


def result_value(msg: hl7.Message, value_type: str,
                 raw: str) -> tuple[float | int | str | None, str | None]:
    """``(value, comparator)`` of an OBX-5 read as its type says; ``(None, None)`` if empty."""
    comp = msg.separators[3]  # segment, field, repetition, component, sub-component
    parts = [str(msg.unescape(p)).strip() for p in raw.split(comp)]
    if value_type == "SN":
        cmp_ = parts[0] if parts and parts[0] in ("<", "<=", ">", ">=") else None
        first = number(parts[1]) if len(parts) > 1 else None
        if len(parts) > 3 and parts[3]:
            return "".join(parts[1:4]), cmp_  # a ratio or range: 1:128, 10-20
        return first, cmp_
    if value_type in CODED:
        text = parts[1] if len(parts) > 1 and parts[1] else parts[0]
        return text or None, None
    text = comp.join(parts).strip() if value_type not in ("NM", "") else parts[0]
    if not text:
        return None, None
    if value_type in ("NM", ""):
        found = number(text)
        if found is not None:
            return found, None
    return text[:500], None


def _range(text: str | None) -> str | None:
    if not text:
        return None
    found = _RANGE.match(text)  # the v2 specification's examples write 70_105
    return f"{found.group(1)}-{found.group(2)}" if found else text[:64]


def observations(r: _Reader, patient_id: str, prefix: str,
                 encounter_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The events of the message's OBX segments: ``(event type, payload)`` in order."""
    from careloop.flows.inbound.hl7 import Issue, _event_time, _occurrences, value

    code_ref = r.spec.field("observation", "code")
    value_ref = r.spec.field("observation", "value")
    if code_ref is None or value_ref is None:
        r.out.issues.append(Issue("OBX", "207", f"the mapping {r.spec.key!r} has no "
                                  "observation section"))
        return []
    kinds = r.spec.tables.get("observations", {})
    out: list[tuple[str, dict[str, Any]]] = []
    pressure: dict[str, Any] = {}
    for n in range(1, _occurrences(r.msg, code_ref.segment) + 1):
        code = value(r.msg, code_ref, n)
        status = (r.text("observation", "status", occurrence=n) or "").upper()
        if not code or status in NO_RESULT:
            r.out.skipped += 1
            continue
        value_type = (r.text("observation", "value_type", occurrence=n) or "").upper()
        found, comparator = result_value(r.msg, value_type, _raw_field(r.msg, value_ref, n))
        where = f"{code_ref.segment}[{n}]-{value_ref.field}"
        if found is None:
            r.out.issues.append(Issue(where, "101", f"the result of {code} is empty"))
            continue
        detail = {"unit": r.text("observation", "unit", occurrence=n),
                  "reference_range": _range(r.text("observation", "reference_range",
                                                   occurrence=n)),
                  "abnormal_flag": r.text("observation", "abnormal_flag", occurrence=n)}
        at = r.when("observation", "observed_at", n) or _event_time(r.msg)
        kind = kinds.get(code)
        if kind is None:
            out.append(("result.recorded", _result(r, n, code, found, comparator, detail, at,
                                                   STATUSES.get(status, "final"), patient_id,
                                                   prefix, encounter_id)))
            continue
        if not isinstance(found, int | float):
            r.out.issues.append(Issue(where, "102", f"result of {code} is not a number"))
            continue
        if kind in READING_PARTS:
            pressure[READING_PARTS[kind]] = found
            pressure.setdefault("unit", detail["unit"])
            pressure.setdefault("at", at)
            pressure.setdefault("codes", []).append(code)
            continue
        out.append(("reading.recorded", {
            "reading_id": f"{prefix}-obx{n}", "patient_id": patient_id, "type": kind,
            "measured_at": at, "value": {"value": found, "code": code,
                                         **{k: v for k, v in detail.items() if v}}}))
    if pressure:
        out.append(("reading.recorded", {
            "reading_id": f"{prefix}-bp", "patient_id": patient_id, "type": "blood_pressure",
            "measured_at": pressure.pop("at"),
            "value": {k: v for k, v in pressure.items() if v is not None}}))
    return out


def _result(r: _Reader, n: int, code: str, found: float | int | str, comparator: str | None,
            detail: dict[str, str | None], at: str | None, status: str, patient_id: str,
            prefix: str, encounter_id: str | None) -> dict[str, Any]:
    system = (r.text("observation", "coding_system", occurrence=n) or "").upper()
    flag = (detail.get("abnormal_flag") or "").upper()
    payload: dict[str, Any] = {
        "result_id": f"{prefix}-obx{n}", "patient_id": patient_id, "code": code[:64],
        "system": "loinc" if system in LOINC_SYSTEMS else "local",
        "display": (r.text("observation", "text", occurrence=n) or "")[:200] or None,
        "value": found, "comparator": comparator, "unit": (detail.get("unit") or "")[:32] or None,
        "reference_range": detail.get("reference_range"),
        "abnormal_flag": flag if re.fullmatch(r"[A-Z<>]{1,4}", flag) else None,
        "status": status, "observed_at": at, "encounter_id": encounter_id}
    return {k: v for k, v in payload.items() if v is not None}
