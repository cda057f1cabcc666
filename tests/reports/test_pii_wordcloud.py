"""Word clouds never show who was written about: the patient's own name, staff names and words
jieba tags as a person's name are dropped (issue 14, part 8)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.reports import views
from careloop.reports.tables import table

APPS = Path(__file__).resolve().parents[2] / "app_definitions"


def test_the_negative_feedback_cloud_drops_person_names(engine: Engine, seed: Any) -> None:
    for app in ("common", "discharge", "cardiology", "satisfaction", "complaints"):
        import_bundle(APPS / app, engine=engine)
    at = datetime(2026, 3, 10, 2, tzinfo=UTC)
    comments = ["我是欧阳娜娜，护士态度很差，等待时间太长",
                "刘建国医生态度很差，李娜护士不理人",
                "护士态度很差，张伟说谢谢也没用"]
    ids = [seed.submit("cardiology", {"nps": 1, "overall": 1, "comment": text}, at=at,
                       doctor=7) for text in comments]
    with engine.begin() as conn:  # the first patient is 欧阳娜娜; doctor 7 is 刘建国
        conn.execute(update(table("patients")).where(table("patients").c.id == f"p{ids[0]}")
                     .values(name="欧阳娜娜"))
        conn.execute(update(table("users")).where(table("users").c.id == 7)
                     .values(display_name="刘建国"))
    with transaction(engine) as session:
        payload = views.dashboard_payload(session, "negative_feedback", {}, None, "zh-CN")
    cloud = next(t for t in payload["tiles"] if t["chart"] == "negative_wordcloud")
    words = {r["word"]: r["count"] for r in cloud["data"]["rows"]}
    assert words["护士"] == 3 and words["态度"] == 3
    for name in ("欧阳娜娜", "欧阳", "娜娜", "刘建国", "李娜", "张伟"):
        assert name not in words, (name, words)
    assert "谢谢" in words  # a word jieba mistakes for a name is kept
