"""A dataset grouped by question reads each question's words, a matrix's rows included
(各服务环节CSAT: 入院办理, 护理服务 … — not ``touchpoints.admission``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.reports.labels import dimension_labels
from careloop.reports.spec import DatasetSpec

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def test_a_matrix_rows_questions_read_as_their_labels(engine: Engine) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(APPS / app, engine=engine)
    with transaction(engine) as session:
        row = store.current(session, "dataset", "touchpoint_csat")
        assert row is not None
        dataset = store.compile_row(row, DatasetSpec)
        values = ["touchpoints.admission", "touchpoints.nursing", "overall"]
        zh = dimension_labels(session, dataset, "question", values, "zh-CN")
        en = dimension_labels(session, dataset, "question", values, "en")
    assert zh["touchpoints.admission"] == "入院办理" and zh["touchpoints.nursing"] == "护理服务"
    assert en["touchpoints.admission"] == "Admission"
    assert zh["overall"] == "您对本次住院的总体满意度如何？"
