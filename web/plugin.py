"""Registers the web runtime's CLI commands (``serve``, ``up``)."""

from __future__ import annotations

from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.web.cli import serve, up

    registry.catalogue("cli").register("serve", serve)
    registry.catalogue("cli").register("up", up)
