"""The one APScheduler job of a process: it only ticks; the timers, alert states and runs are rows.

Engines register periodic work in ``registry.catalogue("tick")`` as ``name -> fn(engine)``. Every
process may run a ticker against the same database: each tick function claims its own rows
atomically (see the flow engine's timer sweep), so nothing runs twice.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine

from careloop.engine.clock import hospital_tz
from careloop.engine.db import default_engine
from careloop.engine.registry import loaded_registry

log = logging.getLogger("careloop.ticker")


def tick(engine: Engine | None = None) -> dict[str, str]:
    """Run every registered tick function once; one failing does not stop the others."""
    engine = engine or default_engine()
    outcome: dict[str, str] = {}
    for name, fn in loaded_registry().catalogue("tick").items():
        try:
            fn(engine)
            outcome[name] = "ok"
        except Exception as exc:  # a tick must survive; the type is logged, never the data
            log.error("tick %s failed: %s", name, type(exc).__name__)
            outcome[name] = f"failed: {type(exc).__name__}"
    return outcome


def start(interval_seconds: int = 30) -> Any:
    """Start this process's ticker; returns the APScheduler scheduler (call ``shutdown()``)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=hospital_tz())
    scheduler.add_job(tick, "interval", seconds=interval_seconds, id="careloop.tick",
                      max_instances=1, coalesce=True, replace_existing=True)
    scheduler.start()
    return scheduler
