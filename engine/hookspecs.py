"""The extension points of Careloop, as pluggy hook specifications (pytest's and Datasette's way).

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names are the hooks
below. Every built-in engine is such a plugin, listed as an entry point of the ``careloop.plugins``
group exactly as an outside package lists its own (``engine/plugins.py`` loads them). A module of
that group that has a plain ``register(registry)`` and no ``register_types`` hook implements
``register_types`` through it, so the older convention keeps working::

    from careloop.engine.hookspecs import hookimpl

    @hookimpl
    def model_modules() -> list[str]:
        return ["acme_careloop.tables"]

    @hookimpl
    def migration_locations() -> list[str]:
        return ["acme_careloop:migrations"]

Hooks that answer return a list; the results of every plugin are concatenated in load order
(built-ins first, in their listed order, then installed extensions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from careloop.engine.registry import Registry

PROJECT = "careloop"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_types(registry: Registry) -> None:
    """Add named things to the registry's catalogues: kinds, field types, step types, actions,
    functions, channels, services, ticks… Called once per registry."""


@hookspec
def model_modules() -> Sequence[str]:
    """Import names of the modules that define this plugin's tables (on the shared
    ``careloop.engine.models.Base``); they are imported before migrations and table checks."""
    return ()


@hookspec
def migration_locations() -> Sequence[str]:
    """Alembic version folders of this plugin, as ``"package:folder"`` (``"acme_careloop:
    migrations"``). A plugin's revisions form its own branch (``branch_labels``) rooted on the
    core revision it needs (``depends_on``); ``careloop db upgrade`` applies every head."""
    return ()


@hookspec
def translation_dirs() -> Sequence[str]:
    """i18n folders as ``"package:folder"``: each holds ``<locale>.json`` files (flat
    ``{"key": "text"}``) and may have sub-folders, one per part of the plugin, holding theirs."""
    return ()


@hookspec
def routers() -> Sequence[Any]:
    """FastAPI ``APIRouter`` objects the web app includes, in load order."""
    return ()


@hookspec
def template_dirs() -> Sequence[str]:
    """Jinja template folders as ``"package:folder"``, searched after the web app's own."""
    return ()


@hookspec
def static_dirs() -> Sequence[tuple[str, str, str]]:
    """Static files: ``(url path, package, folder)``, e.g. ``("/static", "<package>", "static")``;
    the folders given for one URL path are searched in load order."""
    return ()


@hookspec
def inbound_event_types() -> Sequence[tuple[str, Mapping[str, Any]]]:
    """Event types ``POST /api/v1/events`` accepts: ``(type, JSON Schema of its payload)``."""
    return ()
