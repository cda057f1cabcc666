"""A FHIR R4 Observation that is not a reading, as a laboratory result (``result.recorded``).

    {"resourceType": "Observation", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4",
                          "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
     "valueQuantity": {"value": 7.2, "unit": "%", "system": "http://unitsofmeasure.org",
                       "code": "%"},
     "referenceRange": [{"low": {"value": 4}, "high": {"value": 6}}],
     "interpretation": [{"coding": [{"code": "H"}]}], …}
        ──▶ {"code": "4548-4", "system": "loinc", "display": "Hemoglobin A1c/…",
             "value": 7.2, "unit": "%", "reference_range": "4-6", "abnormal_flag": "H", …}

The code is the LOINC coding, else the first coding with a code (a laboratory's local code);
its name is that coding's ``display``, else ``code.text``. The value is ``valueQuantity`` (its
UCUM ``code``, else its ``unit``, as the unit; a comparator kept), ``valueInteger``,
``valueString`` or the text of ``valueCodeableConcept``. The interpretation is the v3
ObservationInterpretation code (H, L, A, HH, LL, AA, N; the same letters as HL7 v2 table 0078).
"""

from __future__ import annotations

from typing import Any

from careloop.flows.inbound.fhir import LOINC, FhirRefused, Issue

STATUSES = {"registered": "preliminary", "preliminary": "preliminary", "final": "final",
            "amended": "amended", "corrected": "corrected"}


def coding(concept: Any) -> tuple[str, str, str | None] | None:
    """``(code, system, display)``: the LOINC coding first, else the first coded one."""
    codings = [c for c in (concept or {}).get("coding") or [] if c.get("code")]
    if not codings:
        return None
    chosen = next((c for c in codings if c.get("system") == LOINC), codings[0])
    display = chosen.get("display") or (concept or {}).get("text")
    return (str(chosen["code"])[:64], "loinc" if chosen.get("system") == LOINC else "local",
            str(display)[:200] if display else None)


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _range(resource: dict[str, Any]) -> str | None:
    for item in resource.get("referenceRange") or []:
        low, high = (item.get("low") or {}).get("value"), (item.get("high") or {}).get("value")
        if low is not None and high is not None:
            return f"{_plain(low)}-{_plain(high)}"
        if high is not None:
            return f"<{_plain(high)}"
        if low is not None:
            return f">{_plain(low)}"
        if item.get("text"):
            return str(item["text"])[:64]
    return None


def _flag(resource: dict[str, Any]) -> str | None:
    for concept in resource.get("interpretation") or []:
        for found in concept.get("coding") or []:
            code = str(found.get("code") or "").upper()
            if code and len(code) <= 4 and code.replace("<", "").replace(">", "").isalpha():
                return code
    return None


def _value(resource: dict[str, Any], root: str) -> dict[str, Any]:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        out: dict[str, Any] = {"value": quantity["value"]}
        unit = quantity.get("code") or quantity.get("unit")
        if unit:
            out["unit"] = str(unit)[:32]
        if quantity.get("comparator") in ("<", "<=", ">", ">="):
            out["comparator"] = quantity["comparator"]
        return out
    if isinstance(resource.get("valueInteger"), int):
        return {"value": resource["valueInteger"]}
    if isinstance(resource.get("valueString"), str) and resource["valueString"].strip():
        return {"value": resource["valueString"].strip()[:500]}
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        text = concept.get("text") or next(
            (c.get("display") or c.get("code") for c in concept.get("coding") or []
             if c.get("display") or c.get("code")), None)
        if text:
            return {"value": str(text)[:500]}
    raise FhirRefused(422, [Issue("required", "a laboratory result needs its value: "
                                              "valueQuantity, valueInteger, valueString or "
                                              "valueCodeableConcept", f"{root}.value[x]")])


def result_payload(resource: dict[str, Any], root: str, result_id: str, patient_id: str,
                   observed_at: str) -> dict[str, Any]:
    """The ``result.recorded`` payload of one Observation; raises :class:`FhirRefused` naming
    the element at fault."""
    found = coding(resource.get("code"))
    if found is None:
        raise FhirRefused(422, [Issue("required", "the Observation needs a coded test (a LOINC "
                                                  "or local code)", f"{root}.code.coding")])
    code, system, display = found
    payload: dict[str, Any] = {
        "result_id": result_id, "patient_id": patient_id, "code": code, "system": system,
        "display": display, **_value(resource, root), "reference_range": _range(resource),
        "abnormal_flag": _flag(resource),
        "status": STATUSES.get(str(resource.get("status")), "final"),
        "observed_at": observed_at}
    return {k: v for k, v in payload.items() if v is not None}
