"""Built-in registrations of the engine itself: shared kinds, expression functions and the daily
``scheduled`` event tick."""

from __future__ import annotations

from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    """Register the engine's built-ins; called once by :meth:`Registry.load_plugins`."""
    from careloop.engine import functions, kinds_builtin
    from careloop.engine.events import emit_daily

    functions.register(registry)
    kinds_builtin.register(registry)
    registry.catalogue("tick").register("engine.daily", emit_daily)
