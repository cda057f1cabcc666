from sqlalchemy import Engine

from careloop.engine import ticker
from careloop.engine.registry import loaded_registry


def test_tick_runs_every_registered_function_and_survives_a_failure(engine: Engine) -> None:
    ticks = loaded_registry().catalogue("tick")
    assert {"flows.sweep", "reports.alerts"} <= set(ticks.names())
    seen: list[str] = []

    def boom(_engine: Engine) -> None:
        raise RuntimeError("patient 13812345678")  # the message must never be logged

    ticks.register("test.boom", boom)
    ticks.register("test.ok", lambda e: seen.append(str(e.url)))
    try:
        outcome = ticker.tick(engine)
    finally:
        ticks._items.pop("test.boom")
        ticks._items.pop("test.ok")
    assert outcome["test.boom"] == "failed: RuntimeError"
    assert outcome["test.ok"] == "ok" and outcome["flows.sweep"] == "ok"
    assert outcome["reports.alerts"] == "ok" and seen
