"""What the discharge-flow speed pass (flowspd) changed: compiled template texts kept, outbox
rows claimed in one statement, the log channel sent without a worker thread."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.limits import LimitExceeded
from careloop.engine.registry import loaded_registry
from careloop.engine.templates import BoundedSandbox
from careloop.flows import outbox
from careloop.flows.models import OutboxMessage

from .conftest import APPS  # type: ignore[import-not-found]

AT = datetime(2026, 12, 1, 2, tzinfo=UTC)  # 10:00 in Shanghai: no quiet hours


def test_a_template_text_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    env = BoundedSandbox()
    compiled: list[str] = []
    real = env.compile

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(env, "compile", counting)
    assert env.render("{{ a }}您好", {"a": "王"}) == "王您好"
    assert env.render("{{ a }}您好", {"a": "李"}) == "李您好"
    assert compiled == ["{{ a }}您好"]


def test_a_kept_template_still_counts_its_steps_each_render() -> None:
    env = BoundedSandbox()
    text = "{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}"
    assert env.render(text, {"n": 3}) == "x" * 9
    with pytest.raises(LimitExceeded):
        env.render(text, {"n": 5000})
    assert env.render(text, {"n": 2}) == "x" * 4  # the budget is per render, not per text


@pytest.fixture
def common(engine: Engine) -> Engine:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="张三", phone="13800000000", locale="en",
                            attributes={}, consents={}))
    return engine


def _enqueue(engine: Engine, key: str, channel: str = "log") -> int:
    service = loaded_registry().catalogue("service")["outbox.enqueue"]
    with frozen_now(AT), transaction(engine) as session:
        return int(service(session, template_key="diet_advice", channel=channel,
                           patient_id="P1", values={"patient_name": "张三"},
                           idempotency_key=key))


def test_a_batch_is_claimed_in_one_update(common: Engine) -> None:
    ids = [_enqueue(common, f"k{i}") for i in range(5)]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(common, "before_cursor_execute", seen)
    try:
        claimed = outbox._claim(common, "w", AT, 100)
    finally:
        event.remove(common, "before_cursor_execute", seen)
    assert [row_id for row_id, _ in claimed] == ids
    assert statements.count("UPDATE") == 1  # one per row before
    # claimed: a second claim at the same instant finds nothing
    assert outbox._claim(common, "other", AT, 100) == []


def test_the_log_channel_is_sent_without_a_thread(common: Engine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    message_id = _enqueue(common, "log1")

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread for the log channel")

    monkeypatch.setattr(outbox, "_bounded", no_thread)
    assert outbox.dispatch_due(common, worker="w", now=AT) == {"logged": 1}
    with transaction(common) as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None and row.status == "logged" and row.attempts == 1
