"""The validated instrument library (app_definitions/instruments, and PHQ-9 / GAD-7 of
app_definitions/mental_health): each instrument's published scoring, checked on known vectors
submitted through the real form runtime — totals, bands at every boundary, and each flag.

Sources, licences and cut-offs: docs/instruments.md. A vector is the answers by item (the choice
codes are the published points), the expected scores and bands; ``gender`` picks the patient
(AUDIT-C's cut-off is by sex).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundles
from careloop.engine.cli import _add_engine_commands, cli
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.forms.fhir import export_questionnaire
from careloop.forms.models import Submission, SubmissionAnswer
from careloop.forms.runtime import SubmissionInvalid, load_form, submit

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "app_definitions"
LIBRARY = APPS / "instruments"


def items(prefix: str, *points: int) -> dict[str, str]:
    """Answers ``q1``… (or named keys) from published points, as choice codes."""
    return {f"{prefix}{i}": str(p) for i, p in enumerate(points, start=1)}


def named(keys: str, *points: int) -> dict[str, str]:
    return {k: str(p) for k, p in zip(keys.split(), points, strict=True)}


# Zung's published keys: the positively worded items, scored 4-1 (the others 1-4)
ZUNG_REVERSED = {"sds": {2, 5, 6, 11, 12, 14, 16, 17, 18, 20}, "sas": {5, 9, 13, 17, 19}}


def zung(form: str, ticked: str) -> dict[str, str]:
    """Answers from what the patient ticked on each of the 20 items, 1 (none or a little of the
    time) … 4 (most or all of the time): the code is the point after reverse scoring."""
    return {f"q{i}": str(5 - int(level) if i in ZUNG_REVERSED[form] else int(level))
            for i, level in enumerate(ticked, start=1)}


BARTHEL = "feeding bathing grooming dressing bowels bladder toilet transfer mobility stairs"
MORSE = "history secondary_diagnosis ambulatory_aid iv gait mental_status"
BRADEN = "sensory moisture activity mobility nutrition friction"
EQ5D = "mobility self_care usual_activities pain_discomfort anxiety_depression"

# (form, answers, expected scores, expected bands, patient gender)
Vector = tuple[str, dict[str, Any], dict[str, float], dict[str, str], str]
VECTORS: list[Vector] = [
    # PHQ-9 (Kroenke 2001): 0-4 minimal, 5-9 mild, 10-14 moderate, 15-19 moderately severe,
    # 20-27 severe; item 9 > 0 flagged. 12 is the answers of the HL7 FHIR SDC PHQ-9 sample.
    ("phq9", items("q", 0, 0, 0, 0, 0, 0, 0, 0, 0), {"total": 0, "item9_positive": 0},
     {"total": "minimal"}, "female"),
    ("phq9", items("q", 1, 1, 1, 1, 0, 0, 0, 0, 0), {"total": 4}, {"total": "minimal"}, "female"),
    ("phq9", items("q", 1, 1, 1, 1, 1, 0, 0, 0, 0), {"total": 5}, {"total": "mild"}, "female"),
    ("phq9", items("q", 1, 1, 1, 1, 1, 1, 1, 1, 1), {"total": 9, "item9_positive": 1},
     {"total": "mild"}, "female"),
    ("phq9", items("q", 2, 2, 2, 2, 2, 0, 0, 0, 0), {"total": 10}, {"total": "moderate"}, "male"),
    ("phq9", items("q", 2, 2, 2, 2, 1, 1, 2, 0, 0), {"total": 12}, {"total": "moderate"}, "male"),
    ("phq9", items("q", 2, 2, 2, 2, 2, 2, 2, 0, 0), {"total": 14}, {"total": "moderate"}, "male"),
    ("phq9", items("q", 3, 3, 3, 3, 3, 0, 0, 0, 0), {"total": 15},
     {"total": "moderately_severe"}, "male"),
    ("phq9", items("q", 3, 3, 3, 3, 3, 2, 2, 0, 0), {"total": 19},
     {"total": "moderately_severe"}, "male"),
    ("phq9", items("q", 3, 3, 3, 3, 3, 3, 2, 0, 0), {"total": 20}, {"total": "severe"}, "male"),
    ("phq9", items("q", 3, 3, 3, 3, 3, 3, 3, 3, 3), {"total": 27, "item9_positive": 1},
     {"total": "severe"}, "male"),
    # PHQ-2 (Kroenke 2003): 3 or more positive
    ("phq2", items("q", 0, 0), {"total": 0}, {"total": "negative"}, "female"),
    ("phq2", items("q", 1, 1), {"total": 2}, {"total": "negative"}, "female"),
    ("phq2", items("q", 2, 1), {"total": 3}, {"total": "positive"}, "female"),
    ("phq2", items("q", 3, 3), {"total": 6}, {"total": "positive"}, "female"),
    # GAD-7 (Spitzer 2006): 0-4 minimal, 5-9 mild, 10-14 moderate, 15-21 severe
    ("gad7", items("q", 1, 1, 1, 1, 0, 0, 0), {"total": 4}, {"total": "minimal"}, "female"),
    ("gad7", items("q", 1, 1, 1, 1, 1, 0, 0), {"total": 5}, {"total": "mild"}, "female"),
    ("gad7", items("q", 2, 2, 2, 1, 1, 1, 0), {"total": 9}, {"total": "mild"}, "female"),
    ("gad7", items("q", 2, 2, 2, 2, 1, 1, 0), {"total": 10}, {"total": "moderate"}, "female"),
    ("gad7", items("q", 2, 2, 2, 2, 2, 2, 2), {"total": 14}, {"total": "moderate"}, "female"),
    ("gad7", items("q", 3, 2, 2, 2, 2, 2, 2), {"total": 15}, {"total": "severe"}, "female"),
    ("gad7", items("q", 3, 3, 3, 3, 3, 3, 3), {"total": 21}, {"total": "severe"}, "female"),
    # EPDS (Cox 1987): codes are the points (items 3, 5-10 reverse scored on the paper form);
    # 0-9 unlikely, 10-12 possible, 13-30 probable; item 10 > 0 flagged whatever the total
    ("epds", items("q", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), {"total": 0, "self_harm": 0},
     {"total": "unlikely", "self_harm": "no"}, "female"),
    ("epds", items("q", 1, 1, 1, 1, 1, 1, 1, 1, 1, 0), {"total": 9},
     {"total": "unlikely"}, "female"),
    ("epds", items("q", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), {"total": 10, "self_harm": 1},
     {"total": "possible", "self_harm": "yes"}, "female"),
    ("epds", items("q", 2, 2, 2, 2, 1, 1, 1, 1, 0, 0), {"total": 12, "self_harm": 0},
     {"total": "possible", "self_harm": "no"}, "female"),
    ("epds", items("q", 2, 2, 2, 2, 2, 1, 1, 1, 0, 0), {"total": 13},
     {"total": "probable"}, "female"),
    ("epds", items("q", 0, 0, 0, 0, 0, 0, 0, 0, 0, 3), {"total": 3, "self_harm": 1},
     {"total": "unlikely", "self_harm": "yes"}, "female"),
    ("epds", items("q", 3, 3, 3, 3, 3, 3, 3, 3, 3, 3), {"total": 30, "self_harm": 1},
     {"total": "probable", "self_harm": "yes"}, "female"),
    # AUDIT-C (Bush 1998, Bradley 2007): positive at 4+ for men, 3+ for women
    ("audit_c", items("q", 0, 0, 0), {"total": 0, "positive": 0}, {"positive": "negative"},
     "female"),
    ("audit_c", items("q", 1, 1, 1), {"total": 3, "positive": 1}, {"positive": "positive"},
     "female"),
    ("audit_c", items("q", 1, 1, 1), {"total": 3, "positive": 0}, {"positive": "negative"},
     "male"),
    ("audit_c", items("q", 2, 1, 1), {"total": 4, "positive": 1}, {"positive": "positive"},
     "male"),
    ("audit_c", items("q", 4, 4, 4), {"total": 12, "positive": 1}, {"positive": "positive"},
     "male"),
    # Barthel (Mahoney & Barthel 1965), grades of WS/T 431-2013: 100 none, 61-99 mild,
    # 41-60 moderate, 0-40 severe (scores move by 5)
    ("barthel", named(BARTHEL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), {"total": 0},
     {"total": "severe"}, "female"),
    ("barthel", named(BARTHEL, 10, 0, 0, 5, 10, 10, 5, 0, 0, 0), {"total": 40},
     {"total": "severe"}, "female"),
    ("barthel", named(BARTHEL, 10, 0, 0, 5, 10, 10, 5, 5, 0, 0), {"total": 45},
     {"total": "moderate"}, "female"),
    ("barthel", named(BARTHEL, 10, 0, 0, 5, 10, 10, 5, 10, 10, 0), {"total": 60},
     {"total": "moderate"}, "female"),
    ("barthel", named(BARTHEL, 10, 0, 5, 5, 10, 10, 5, 10, 10, 0), {"total": 65},
     {"total": "mild"}, "female"),
    ("barthel", named(BARTHEL, 10, 0, 5, 10, 10, 10, 10, 15, 15, 10), {"total": 95},
     {"total": "mild"}, "female"),
    ("barthel", named(BARTHEL, 10, 5, 5, 10, 10, 10, 10, 15, 15, 10), {"total": 100},
     {"total": "independent"}, "female"),
    # Morse (Morse 1989): 0-24 low, 25-44 moderate, 45+ high (scores move by 5)
    ("morse_fall", named(MORSE, 0, 0, 0, 0, 0, 0), {"total": 0}, {"total": "low"}, "male"),
    ("morse_fall", named(MORSE, 0, 0, 0, 20, 0, 0), {"total": 20}, {"total": "low"}, "male"),
    ("morse_fall", named(MORSE, 25, 0, 0, 0, 0, 0), {"total": 25}, {"total": "moderate"},
     "male"),
    ("morse_fall", named(MORSE, 25, 15, 0, 0, 0, 0), {"total": 40}, {"total": "moderate"},
     "male"),
    ("morse_fall", named(MORSE, 25, 0, 0, 20, 0, 0), {"total": 45}, {"total": "high"}, "male"),
    ("morse_fall", named(MORSE, 25, 15, 30, 20, 20, 15), {"total": 125}, {"total": "high"},
     "male"),
    # Braden (Bergstrom 1987; bands Ayello & Braden 2002): <=9 very high, 10-12 high,
    # 13-14 moderate, 15-18 mild, 19-23 none; 12 or less flagged high risk
    ("braden", named(BRADEN, 1, 1, 1, 1, 1, 1), {"total": 6, "high_risk": 1},
     {"total": "very_high", "high_risk": "yes"}, "male"),
    ("braden", named(BRADEN, 2, 2, 1, 1, 2, 1), {"total": 9}, {"total": "very_high"}, "male"),
    ("braden", named(BRADEN, 2, 2, 2, 1, 2, 1), {"total": 10}, {"total": "high"}, "male"),
    ("braden", named(BRADEN, 2, 2, 2, 2, 2, 2), {"total": 12, "high_risk": 1},
     {"total": "high", "high_risk": "yes"}, "male"),
    ("braden", named(BRADEN, 3, 2, 2, 2, 2, 2), {"total": 13, "high_risk": 0},
     {"total": "moderate", "high_risk": "no"}, "male"),
    ("braden", named(BRADEN, 3, 3, 2, 2, 2, 2), {"total": 14}, {"total": "moderate"}, "male"),
    ("braden", named(BRADEN, 3, 3, 3, 2, 2, 2), {"total": 15}, {"total": "mild"}, "male"),
    ("braden", named(BRADEN, 3, 3, 3, 3, 3, 3), {"total": 18}, {"total": "mild"}, "male"),
    ("braden", named(BRADEN, 4, 3, 3, 3, 3, 3), {"total": 19}, {"total": "none"}, "male"),
    ("braden", named(BRADEN, 4, 4, 4, 4, 4, 3), {"total": 23, "high_risk": 0},
     {"total": "none", "high_risk": "no"}, "male"),
    # NRS pain: 0 none, 1-3 mild, 4-6 moderate, 7-10 severe
    ("nrs_pain", {"pain": 0}, {"total": 0}, {"total": "none"}, "female"),
    ("nrs_pain", {"pain": 1}, {"total": 1}, {"total": "mild"}, "female"),
    ("nrs_pain", {"pain": 3}, {"total": 3}, {"total": "mild"}, "female"),
    ("nrs_pain", {"pain": 4}, {"total": 4}, {"total": "moderate"}, "female"),
    ("nrs_pain", {"pain": 6}, {"total": 6}, {"total": "moderate"}, "female"),
    ("nrs_pain", {"pain": 7}, {"total": 7}, {"total": "severe"}, "female"),
    ("nrs_pain", {"pain": 10}, {"total": 10}, {"total": "severe"}, "female"),
    # SDS (Zung 1965; Chinese norm, 汪向东 1999): raw = Σ points (items 2 5 6 11 12 14 16 17 18 20
    # reversed), index = integer part of raw × 1.25; <53 none, 53-62 mild, 63-72 moderate, ≥73
    # severe; item 19 above "none or a little" flagged. Raw 42 → 52.5 → 52 and raw 50 → 62.5 → 62
    # show the integer part (rounding would give 53 and 63: another band).
    ("sds", zung("sds", "14114411114414144414"),  # every point 1: raw 20 → 25
     {"raw": 20, "index": 25, "item19_positive": 0}, {"index": "none", "item19_positive": "no"},
     "female"),
    ("sds", zung("sds", "11111111111111111111"),  # ticks "none or a little" everywhere:
     {"raw": 50, "index": 62}, {"index": "mild"}, "female"),  # 10 × 1 + 10 reversed × 4 = 50
    ("sds", zung("sds", "44444444444444444444"),  # the mirror: 10 × 4 + 10 × 1 = 50, item 19 = 4
     {"raw": 50, "index": 62, "item19_positive": 1}, {"index": "mild", "item19_positive": "yes"},
     "female"),
    ("sds", zung("sds", "41441142114414144414"),  # points 44444442111111111111 = 42 → 52.5
     {"raw": 42, "index": 52}, {"index": "none"}, "male"),
    ("sds", zung("sds", "41441143114414144414"),  # points 44444443111111111111 = 43 → 53.75
     {"raw": 43, "index": 53}, {"index": "mild"}, "male"),
    ("sds", zung("sds", "32232122232222223213"),  # points 33233422233323232312 = 51 → 63.75
     {"raw": 51, "index": 63, "item19_positive": 0}, {"index": "moderate"}, "male"),
    ("sds", zung("sds", "41441144441134144414"),  # points 44444444444431111111 = 58 → 72.5
     {"raw": 58, "index": 72}, {"index": "moderate"}, "male"),
    ("sds", zung("sds", "41441144441134144424"),  # points 44444444444431111121 = 59 → 73.75
     {"raw": 59, "index": 73, "item19_positive": 1}, {"index": "severe", "item19_positive": "yes"},
     "male"),
    ("sds", zung("sds", "41441144441141411141"),  # every point 4: raw 80 → 100
     {"raw": 80, "index": 100}, {"index": "severe"}, "male"),
    # SAS (Zung 1971; Chinese norm, 汪向东 1999): items 5 9 13 17 19 reversed; index as SDS;
    # <50 none, 50-59 mild, 60-69 moderate, ≥70 severe
    ("sas", zung("sas", "11114111411141114141"), {"raw": 20, "index": 25}, {"index": "none"},
     "female"),
    ("sas", zung("sas", "11111111111111111111"),  # 15 × 1 + 5 reversed × 4 = 35 → 43.75
     {"raw": 35, "index": 43}, {"index": "none"}, "female"),
    ("sas", zung("sas", "44441421411141114141"),  # points 44444421111111111111 = 39 → 48.75
     {"raw": 39, "index": 48}, {"index": "none"}, "female"),
    ("sas", zung("sas", "44441431411141114141"), {"raw": 40, "index": 50}, {"index": "mild"},
     "female"),
    ("sas", zung("sas", "44441444111141114141"),  # points 44444444411111111111 = 47 → 58.75
     {"raw": 47, "index": 58}, {"index": "mild"}, "female"),
    ("sas", zung("sas", "44441444121141114141"), {"raw": 48, "index": 60},
     {"index": "moderate"}, "female"),
    ("sas", zung("sas", "44441444144341114141"),  # points 44444444444311111111 = 55 → 68.75
     {"raw": 55, "index": 68}, {"index": "moderate"}, "female"),
    ("sas", zung("sas", "44441444144441114141"), {"raw": 56, "index": 70}, {"index": "severe"},
     "female"),
    ("sas", zung("sas", "44444444444444444444"),  # 15 × 4 + 5 × 1 = 65 → 81.25
     {"raw": 65, "index": 81}, {"index": "severe"}, "female"),
    ("sas", zung("sas", "44441444144414441414"), {"raw": 80, "index": 100}, {"index": "severe"},
     "female"),
    # EQ-5D-5L: the five-digit health state as EuroQol writes it; no value set
    ("eq5d5l_profile", {**named(EQ5D, 1, 1, 1, 1, 1), "vas": 90},
     {"profile": 11111, "level_sum": 5, "vas": 90}, {}, "female"),
    ("eq5d5l_profile", {**named(EQ5D, 1, 2, 3, 4, 5), "vas": 40},
     {"profile": 12345, "level_sum": 15, "vas": 40}, {}, "female"),
    ("eq5d5l_profile", {**named(EQ5D, 5, 5, 5, 5, 5), "vas": 0},
     {"profile": 55555, "level_sum": 25, "vas": 0}, {}, "female"),
]

LIBRARY_FORMS = sorted(p.stem for p in (LIBRARY / "forms").glob("*.yaml"))
INSTRUMENTS = [*LIBRARY_FORMS, "phq9", "gad7"]


def _run(*args: str) -> tuple[int, str]:
    _add_engine_commands()
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_the_library_validates() -> None:
    code, out = _run("validate", str(LIBRARY))
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("ok: ") and out.strip().endswith(" 0 errors")


def test_every_instrument_has_vectors_at_each_band_and_flag() -> None:
    """At least 3 vectors per instrument, and every band of every score reached by one."""
    for form in INSTRUMENTS:
        mine = [v for v in VECTORS if v[0] == form]
        assert len(mine) >= 3, form
        path = next(APPS.glob(f"*/forms/{form}.yaml"))
        spec = yaml.safe_load(path.read_text("utf-8"))
        for score in spec["scores"]:
            reached = {v[3].get(score["key"]) for v in mine}
            for band in score.get("bands", []):
                assert band["code"] in reached, (form, score["key"], band["code"])


def test_every_form_states_its_licence_and_source() -> None:
    """What a person reads (the description) names the source and licence; the file's header
    also the LOINC codes (docs/instruments.md)."""
    for form in INSTRUMENTS:
        text = next(APPS.glob(f"*/forms/{form}.yaml")).read_text("utf-8")
        spec = yaml.safe_load(text)
        assert "许可" in spec["description"]["zh-CN"], form
        assert "来源" in spec["description"]["zh-CN"] or form == "eq5d5l_profile", form
        assert "Licence" in spec["description"]["en"], form
        if form in LIBRARY_FORMS:
            header = text.split("\nkind:")[0]
            assert "Licence" in header and "LOINC" in header, form


def test_zung_scales_reverse_exactly_the_published_items() -> None:
    """SDS and SAS: "none or a little of the time" scores 4 on the published reversed items and 1
    on the others, the four levels in order, on every one of the 20 items."""
    for form, reversed_items in ZUNG_REVERSED.items():
        spec = yaml.safe_load((LIBRARY / "forms" / f"{form}.yaml").read_text("utf-8"))
        items = [f for f in spec["fields"] if f["key"].startswith("q")]
        assert [f["key"] for f in items] == [f"q{i}" for i in range(1, 21)], form
        for i, field in enumerate(items, start=1):
            points = [c["score"] for c in field["choices"]]
            assert points == ([4, 3, 2, 1] if i in reversed_items else [1, 2, 3, 4]), (form, i)
            assert [c["code"] for c in field["choices"]] == [str(p) for p in points], (form, i)
            assert field["choices"][0]["label"] == {"zh-CN": "没有或很少时间",
                                                    "en": "None or a little of the time"}


@pytest.fixture
def library(engine: Engine) -> dict[str, str]:
    """The library and mental_health imported as `careloop up` does; a woman and a man."""
    import_bundles([APPS / "common", APPS / "mental_health", LIBRARY], engine=engine,
                   actor="test")
    with transaction(engine) as session:
        session.add(Patient(id="pf", mrn="MRN-F", name="测试女", gender="female",
                            birth_date=date(1990, 3, 1), locale="zh-CN"))
        session.add(Patient(id="pm", mrn="MRN-M", name="测试男", gender="male",
                            birth_date=date(1960, 3, 1), locale="zh-CN"))
    return {"female": "pf", "male": "pm"}


def test_every_vector_scores_as_published_through_the_runtime(
        engine: Engine, library: dict[str, str]) -> None:
    failures = []
    for form, answers, scores, bands, gender in VECTORS:
        with transaction(engine) as session:
            sub, _ = submit(session, form_key=form, answers=answers,
                            patient_id=library[gender], channel="web")
            sub_id = sub.id
        with transaction(engine) as session:
            stored = session.get(Submission, sub_id)
            assert stored is not None
            got_scores = {k: stored.scores.get(k) for k in scores}
            got_bands = {k: stored.bands.get(k) for k in bands}
            if got_scores != {k: float(v) for k, v in scores.items()} or got_bands != bands:
                failures.append((form, answers, got_scores, got_bands))
            # nothing dropped: every answer is stored, one row per item
            assert set(stored.answers) == set(answers), form
            rows = session.scalars(select(SubmissionAnswer.field_key).where(
                SubmissionAnswer.submission_id == sub_id)).all()
            assert set(rows) == set(answers), form
    assert failures == []


def test_an_incomplete_instrument_is_refused_with_every_missing_item(
        engine: Engine, library: dict[str, str]) -> None:
    answers = items("q", 1, 1, 1, 1, 1, 1, 1, 1, 1)  # EPDS without item 10 (self-harm)
    with transaction(engine) as session, pytest.raises(SubmissionInvalid) as exc:
        submit(session, form_key="epds", answers=answers, patient_id="pf")
    assert [e["path"] for e in exc.value.errors] == ["q10"]
    with transaction(engine) as session, pytest.raises(SubmissionInvalid) as exc:
        submit(session, form_key="barthel", answers={"feeding": "7"}, patient_id="pf")
    paths = [e["path"] for e in exc.value.errors]
    assert paths == BARTHEL.split()  # 7 is no Barthel step; the nine others are missing


def test_fhir_export_carries_the_loinc_item_codes(engine: Engine,
                                                  library: dict[str, str]) -> None:
    expected = {"phq2": {"q1": "44250-9", "q2": "44255-8"},
                "audit_c": {"q1": "68518-0", "q2": "68519-8", "q3": "68520-6"},
                "barthel": {"feeding": "83184-2", "stairs": "96758-8", "bladder": "96760-4"},
                "nrs_pain": {"pain": "72514-3"}}
    with transaction(engine) as session:
        for form, codes in expected.items():
            row, spec = load_form(session, form, None)
            questionnaire = export_questionnaire(spec, version=row.version)
            by_link = {i["linkId"]: i for i in questionnaire["item"]}
            for link_id, code in codes.items():
                assert by_link[link_id]["code"] == [{"system": "http://loinc.org",
                                                     "code": code}], (form, link_id)


def test_a_patient_answers_on_the_patient_page_and_the_score_lands(
        engine: Engine, library: dict[str, str]) -> None:
    """The self-report instruments through the patient's link (plain form posts, no JS)."""
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from careloop.engine.clock import now_utc
    from careloop.engine.registry import loaded_registry
    from careloop.web.app import create_app

    create = loaded_registry().catalogue("service")["forms.create_request"]
    chosen = [v for v in VECTORS if v[0] in ("phq2", "epds", "audit_c", "nrs_pain")
              and v[4] == "female"]
    with TestClient(create_app(), base_url="http://testserver") as client:
        for form, answers, scores, bands, _ in chosen:
            with transaction(engine) as session:
                made = create(session, form_key=form, patient_id="pf", encounter_id=None,
                              channel="sms", expires_at=now_utc() + timedelta(days=7))
            page = client.get(made["url"] + "?lang=en")
            assert page.status_code == 200, form
            done = client.post(made["url"], data={"_page": "0", "_lang": "en",
                                                  "_action": "submit", **answers})
            assert done.status_code == 200 and "Thank you" in done.text, (form, done.text[:500])
            with transaction(engine) as session:
                sub = session.scalars(select(Submission).where(
                    Submission.request_id == made["request_id"])).one()
                assert {k: sub.scores.get(k) for k in scores} == {
                    k: float(v) for k, v in scores.items()}, (form, answers)
                assert {k: sub.bands.get(k) for k in bands} == bands, (form, answers)
    assert len(chosen) >= 15
