"""Built-in registrations of the engine itself: shared kinds, expression functions and the daily
``scheduled`` event tick, the audit trail's checkpoint tick and ``careloop backup``."""

from __future__ import annotations

from careloop.engine.hookspecs import hookimpl
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    """Register the engine's built-ins; called once by :meth:`Registry.load_plugins`."""
    from careloop.engine import functions, kinds_builtin
    from careloop.engine.events import emit_daily

    functions.register(registry)
    kinds_builtin.register(registry)
    from careloop.engine.audit import checkpoint_tick
    from careloop.engine.dispatcher import tick as dispatch_tick

    # first: the handlers of stored events run before timers and sweeps look at their effects
    registry.catalogue("tick").register("events.dispatch", dispatch_tick)
    registry.catalogue("tick").register("engine.daily", emit_daily)
    registry.catalogue("tick").register("audit.checkpoint", checkpoint_tick)
    from careloop.engine.cli_backup import backup

    registry.catalogue("cli").register("backup", backup)

# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.engine.domain"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.engine:migrations/versions"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.engine:data/i18n"]
