"""Texts written by rules show whole numbers as people write them (a PHQ-9 total of 10 is stored
as ``10.0``; the doctor's task says ``总分 10``), and other values unchanged."""

from __future__ import annotations

from typing import cast

from sqlalchemy.orm import Session

from careloop.rules.actions import ActionContext


def _context(values: dict[str, object]) -> ActionContext:
    return ActionContext(session=cast(Session, None), ruleset="phq9_safety", version=1,
                         rule="moderate_or_worse", index=0, event_id="e1",
                         event_type="form.submitted", context=values)


def test_whole_scores_are_shown_without_a_decimal_point() -> None:
    ctx = _context({"scores": {"total": 10.0, "mean": 2.5}, "reading": {"value": 195}})
    title = {"zh-CN": "PHQ-9 总分 {{ scores.total }}，均分 {{ scores.mean }}，血压 "
                      "{{ reading.value }}", "en": "total {{ scores.total }}"}
    assert ctx.render(title) == "PHQ-9 总分 10，均分 2.5，血压 195"
    assert ctx.render("{{ scores.total + 0.5 }} {{ '%.1f' % scores.total }}") == "10.5 10.0"
