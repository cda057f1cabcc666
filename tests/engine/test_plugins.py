"""The plugin manager (``engine/plugins.py``): built-ins load through the same hooks and entry
points as an extension, in a fixed order; the older ``register(registry)`` module convention
implements the ``register_types`` hook; every hook's answers reach the place that uses them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

import careloop
from careloop.engine import plugins
from careloop.engine.hookspecs import hookimpl
from careloop.engine.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str, **attrs: Any) -> ModuleType:
    module = ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def test_pyproject_entry_points_name_the_builtin_plugins_in_order() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    group = project["entry-points"][plugins.PLUGIN_GROUP]
    assert tuple(group.values()) == careloop.BUILTIN_PLUGINS
    assert set(group) == {"engine", "forms", "rules", "flows", "reports", "web"}


def test_builtins_answer_every_hook_in_load_order() -> None:
    manager = plugins.make_manager(installed=False)
    assert plugins.migration_locations(manager)[:6] == [
        "careloop.engine:migrations/versions", "careloop.forms:migrations",
        "careloop.rules:migrations", "careloop.flows:migrations", "careloop.reports:migrations",
        "careloop.web:migrations"]
    assert plugins.model_modules(manager)[0] == "careloop.engine.domain"
    assert "careloop.flows.models" in plugins.model_modules(manager)
    assert plugins.translation_dirs(manager)[0] == "careloop.engine:data/i18n"
    assert "encounter.discharged" in plugins.inbound_event_types(manager)
    assert plugins.template_dirs(manager) == ["careloop.web:templates"]
    assert len(plugins.routers(manager)) == 14  # web.plugin ROUTE_MODULES (+ routes_hl7)
    registry = Registry()
    registry.load_plugins(manager)
    assert registry.catalogue("kind").names()[:2] == ["template", "form"]
    assert "scenario" in registry.catalogue("kind")


def test_a_register_function_implements_register_types_once() -> None:
    calls: list[str] = []

    def register(registry: Registry) -> None:
        calls.append("plain")
        registry.catalogue("channel").register("pigeon", "coo")

    @hookimpl
    def register_types(registry: Registry) -> None:
        calls.append("hook")

    plain = _module("ext_plain", register=register)
    both = _module("ext_both", register=register, register_types=register_types)
    manager = plugins.make_manager([plain, both], installed=False)
    registry = Registry()
    registry.load_plugins(manager)
    registry.load_plugins(manager)  # once per registry
    assert calls == ["plain", "hook"]  # the hooked module's plain register is not called too
    assert registry.catalogue("channel")["pigeon"] == "coo"
    assert plugins.add_plugin(manager, plain) is False  # already there: idempotent
    late = _module("ext_late", register=register)
    assert plugins.add_plugin(manager, late) is True
    assert manager.get_plugin("ext_late") is late


def test_a_missing_engine_is_skipped_but_a_plugin_with_a_missing_import_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugins._import("careloop.nosuchengine.plugin") is None
    assert plugins._import("careloop.engine.no_such_plugin") is None
    (tmp_path / "ext_needs_lib.py").write_text("import no_such_library_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_library_xyz"):
        plugins._import("ext_needs_lib")
    with pytest.raises(AttributeError):
        plugins._import("careloop.engine.hookspecs:no_such_attribute")


def test_an_extension_adds_routes_templates_static_files_and_event_types(
        tmp_path: Path) -> None:
    router = APIRouter()

    @router.get("/ext/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @hookimpl
    def routers() -> list[APIRouter]:
        return [router]

    @hookimpl
    def inbound_event_types() -> list[tuple[str, dict[str, Any]]]:
        return [("robot.call_answered", {"type": "object", "required": ["outcome"]})]

    @hookimpl
    def static_dirs() -> list[tuple[str, str, str]]:
        return [("/ext-static", "careloop.web", "static")]

    ext = _module("ext_web", routers=routers, inbound_event_types=inbound_event_types,
                  static_dirs=static_dirs)
    manager = plugins.make_manager([ext], installed=False)
    assert plugins.routers(manager)[-1] is router
    assert plugins.inbound_event_types(manager)["robot.call_answered"]["type"] == "object"
    assert plugins.static_dirs(manager)[-1] == ("/ext-static", "careloop.web", "static")
    assert "robot.call_answered" not in plugins.inbound_event_types(
        plugins.make_manager(installed=False))

    # The events API's check accepts the type and validates its payload with the given schema.
    from careloop.flows.ingest import problems

    event = {"event_id": "r-1", "type": "robot.call_answered", "payload": {"outcome": "busy"}}
    assert [p["path"] for p in problems(event)] == ["$.type"]  # unknown to the core alone
    with plugins.use_manager(manager):
        assert problems(event) == []
        assert [p["path"] for p in problems({**event, "payload": {}})] == ["$.payload"]
    assert [p["path"] for p in problems(event)] == ["$.type"]  # caches cleared on the way out

    # The app includes what the process's manager answers: this one, for one app.
    with plugins.use_manager(manager):
        from careloop.web.app import create_app

        with TestClient(create_app()) as client:
            assert client.get("/ext/ping").json() == {"pong": "yes"}
            assert client.get("/ext-static/app.css").status_code == 200
            assert client.get("/healthz").status_code == 200
