"""Built-in registrations of the engine itself: shared kinds and expression functions."""

from __future__ import annotations

from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    """Register the engine's built-ins; called once by :meth:`Registry.load_plugins`."""
    from careloop.engine import functions, kinds_builtin

    functions.register(registry)
    kinds_builtin.register(registry)
