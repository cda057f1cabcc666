"""Real REDCap data dictionaries from a public repository (REDCapR's test projects, MIT; see
data/redcap/SOURCES.md), with the records REDCap exported beside them.

Every dictionary imports. Each instrument either is carried whole — it publishes, and every
stored record goes through the form runtime with every answer kept and every calculated field
equal to the value REDCap stored — or is refused loudly: each refusal names its line, column and
field, and the form does not publish. A record REDCap stored but the form refuses (a value saved
before its validation was added) must be refused by the runtime naming that field.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.errors import DefinitionInvalid
from careloop.forms.logic import evaluate
from careloop.forms.models import Submission
from careloop.forms.publish import publish_form
from careloop.forms.redcap import COLUMNS, RANGE_NOTE, Instrument, import_instruments
from careloop.forms.runtime import submit
from careloop.forms.testing import form_from_yaml
from tests.forms.corpus_tally import record

PUBLIC = Path(__file__).resolve().parent / "data" / "redcap" / "public"
#: records per instrument also stored through ``submit`` on the test database (all are evaluated)
STORED_PER_INSTRUMENT = 2

#: per dictionary: the instruments refused (loudly); every other instrument is carried whole
REFUSED: dict[str, set[str]] = {
    # Identifier? = y is carried (identifier: true); these stay refused for other features
    "arm-multiple-delete": set(),
    "arm-single-longitudinal": set(),
    "blank-for-gray-status": set(),
    "checkboxes-1": set(),
    "clinical-trial-1": set(),
    "dag": set(),                                  # rounddown(x) without decimals: 0
    "decimal-comma-and-dot": {"demographics"},     # number_comma_decimal
    "decimal-dot": set(),
    "empty-rows": set(),                           # rounddown(x) without decimals: 0
    "file-repo": {"form_1"},                       # @TODAY
    "longitudinal": set(),
    "multilevel-model-1": set(),
    "nonnumeric-record-id": set(),
    "potentially-problematic-dictionary": set(),
    "potentially-problematic-values": set(),
    "project-color-boxes": set(),
    "repeating-instruments": set(),
    "repeating-instruments-sparse": set(),
    "simple": set(),
    "single-column": set(),
    "survey": set(),
    "validation-types-1": {"form_1"},              # sql, validations with no equivalent
    "vignette-repeating": set(),
}
#: (dictionary, record id, field) → the runtime's error: values REDCap stored that the form
#: refuses — outside a range REDCap only warned about on its data entry form (the import notes
#: it), or saved before the field's validation was added
REJECTED: dict[tuple[str, str, str], str] = {
    **{(name, rid, key): "forms.below_min" for name in ("simple", "blank-for-gray-status")
       for rid in ("1", "2") for key in ("height", "weight")},   # 7 cm, 1 kg (mice)
    **{("potentially-problematic-values", rid, key): code for rid in ("1", "2")
       for key, code in (("date_before_validation", "forms.date"),
                         ("integer_before_validation", "forms.not_integer"))},
}


@dataclass
class Outcome:
    """What one dictionary did: instruments carried and refused, records checked."""

    carried: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    records: int = 0
    calcs: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def dictionaries() -> list[str]:
    return sorted(p.name.removesuffix(".dictionary.csv")
                  for p in PUBLIC.glob("*.dictionary.csv"))


def _rows(name: str) -> list[dict[str, str]]:
    path = PUBLIC / f"{name}.data.csv"
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig"))))


def _column(code: str) -> str:
    """REDCap's export column suffix of a checkbox code (lower case, ``-``/``.`` → ``_``)."""
    return re.sub(r"[^a-z0-9_]", "_", code.lower())


def _answer(spec: dict[str, Any], row: dict[str, str]) -> Any:
    """A field's answer from an exported record (raw codes or labels); None when blank."""
    key, kind = spec["key"], spec["type"]
    if kind == "multiple_choice":
        chosen = [c["code"] for c in spec["choices"]
                  if row.get(f"{key}___{_column(c['code'])}", "") in ("1", "Checked")]
        return chosen or None
    value = row.get(key, "")
    if value == "":
        return None
    if kind == "single_choice":
        codes = {c["code"] for c in spec["choices"]}
        if value in codes:
            return value
        by_label = {c["label"]["en"]: c["code"] for c in spec["choices"]}
        # simple/data.csv went through R, which wrote the 0/1 codes of `sex` as FALSE/TRUE
        by_label |= {"FALSE": "0", "TRUE": "1"} if codes == {"0", "1"} else {}
        return by_label.get(value, value)
    if kind in ("integer", "decimal", "slider"):
        try:
            number = float(value)
        except ValueError:
            return value  # stored before the validation was added: the runtime must refuse it
        return int(number) if kind != "decimal" and number.is_integer() else number
    return value


def _normal(value: Any, key: str, asked: list[dict[str, Any]]) -> Any:
    """The runtime keeps text stripped of outer spaces and e-mail addresses in lower case."""
    if not isinstance(value, str):
        return value
    kind = next(f["type"] for f in asked if f["key"] == key)
    return value.strip().lower() if kind == "email" else value.strip()


def _stored(value: str) -> float | None:
    return None if value == "" else float(value)


def _check_instrument(name: str, form: str, instrument: Instrument,
                      rows: list[dict[str, str]], engine: Engine, patient: str,
                      outcome: Outcome) -> None:
    """Every stored record of the instrument through the runtime. A refused instrument is
    checked as it compiles once its refusals are resolved (evaluated, not published)."""
    body = instrument.body
    ranged = {n.field for n in instrument.notes if n.message == RANGE_NOTE}
    whole = not instrument.refused
    text = yaml.safe_dump(body if whole else {**body, "import": {"source": "redcap",
                                                                  "unresolved": []}},
                          allow_unicode=True, sort_keys=False)
    if whole:
        with transaction(engine) as session:
            publish_form(session, text, source_path=f"redcap/public/{name}", actor="tester")
    spec = form_from_yaml(text)
    fields = [f for f in body["fields"] if f["type"] not in ("section", "display")]
    asked = [f for f in fields if f["type"] not in ("calculated", "file", "signature")]
    # not comparable: a calculation on 'today' (the value of the day REDCap saved it), or on
    # a field the import refused
    blocked = ["today()", *(f"answers.{n.field}" for n in instrument.refused)]
    calcs = [f["key"] for f in fields if f["type"] == "calculated"
             and not any(re.search(re.escape(b) + r"(?!\w)", f["calculate"]) for b in blocked)]
    record_id = next(iter(rows[0])) if rows else ""
    stored = 0
    for row in rows:
        repeated = row.get("redcap_repeat_instrument", "")
        if repeated and repeated != form:
            continue
        answers = {f["key"]: a for f in asked if (a := _answer(f, row)) is not None}
        if not answers:
            continue
        rid = row[record_id]
        result = evaluate(spec, answers, locale="en")
        if not result.valid:
            refused = {(name, rid, e["path"]): e["code"] for e in result.errors}
            assert refused == {k: v for k, v in REJECTED.items() if k[:2] == (name, rid)}, (
                f"{name} record {rid}: REDCap stored it, the form refuses {refused}")
            outcome.rejected += [(rid, e["path"]) for e in result.errors]
            for error in result.errors:  # the import said REDCap only warned about the range
                assert error["code"] not in ("forms.below_min", "forms.above_max") or (
                    error["path"] in ranged), (name, rid, error)
            continue
        outcome.records += 1
        kept = result.answers
        if whole and stored < STORED_PER_INSTRUMENT:
            stored += 1
            with transaction(engine) as session:
                submission, _ = submit(session, form_key=body["key"], answers=answers,
                                       patient_id=patient, locale="en")
                submission_id = submission.id
            with transaction(engine) as session:
                kept = dict(session.scalars(select(Submission.answers).where(
                    Submission.id == submission_id)).one())
        lost = {k: v for k, v in answers.items() if kept.get(k) != _normal(v, k, asked)}
        assert not lost, f"{name} record {rid}: answers not kept as given: {lost} → {kept}"
        for key in calcs:
            want = _stored(row.get(key, ""))
            got = kept.get(key)
            assert (got is None) == (want is None) and (
                want is None or got == pytest.approx(want)), (
                f"{name} record {rid}: {key} = {got!r}, REDCap stored {row.get(key)!r}")
            outcome.calcs += want is not None


def _check_dictionary(name: str, engine: Engine, patient: str) -> Outcome:
    outcome = Outcome()
    instruments = import_instruments((PUBLIC / f"{name}.dictionary.csv").read_text("utf-8"),
                                     prefix=re.sub(r"[^a-z0-9]+", "_", name)[:20])
    rows = _rows(name)
    for instrument in instruments:
        form = _form_name(instrument.key, name)
        if instrument.refused:
            for note in instrument.refused:
                assert note.line >= 2 and note.column in COLUMNS.values() and note.field, note
            with pytest.raises(DefinitionInvalid) as caught:
                form_from_yaml(yaml.safe_dump(instrument.body, allow_unicode=True))
            codes = [p.code for p in caught.value.problems]
            assert set(codes) == {"form.import-unresolved"}, caught.value.problems
            assert codes.count("form.import-unresolved") == len(instrument.refused)
            outcome.refused.append(form)
        else:
            outcome.carried.append(form)
        _check_instrument(name, form, instrument, rows, engine, patient, outcome)
    assert set(outcome.refused) == REFUSED[name], (
        f"refused {sorted(outcome.refused)}, claimed {sorted(REFUSED[name])}: "
        + "; ".join(str(n) for i in instruments for n in i.refused))
    return outcome


def _form_name(key: str, name: str) -> str:
    prefix = re.sub(r"[^a-z0-9]+", "_", name)[:20] + "_"
    return key.removeprefix(prefix)


def test_public_dictionaries_import_and_reproduce_redcaps_stored_values(
        engine: Engine, patient: str) -> None:
    names = dictionaries()
    assert len(names) >= 15 and set(names) == set(REFUSED)
    failed: list[str] = []
    totals = Outcome()
    for name in names:
        try:
            outcome = _check_dictionary(name, engine, patient)
        except AssertionError as exc:
            failed.append(f"{name}: {exc}")
            record("redcap", f"public/{name}.dictionary.csv", "silent loss")
            continue
        record("redcap", f"public/{name}.dictionary.csv",
               "refused loudly" if outcome.refused else "whole")
        totals.carried += outcome.carried
        totals.refused += outcome.refused
        totals.records += outcome.records
        totals.calcs += outcome.calcs
        totals.rejected += outcome.rejected
    print(f"\nREDCap public corpus: {len(names)} dictionaries, {len(totals.carried)} instruments "
          f"carried whole, {len(totals.refused)} refused loudly; {totals.records} stored "
          f"records accepted, {totals.calcs} calculated values equal to REDCap's; "
          f"{len(totals.rejected)} records refused naming their field")
    assert not failed, "\n".join(failed)
    assert totals.calcs >= 15
