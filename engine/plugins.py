"""Loading plugins: built-ins and installed extensions through one pluggy plugin manager.

The plugins are the modules of the ``careloop.plugins`` entry-point group. The built-in engines are
listed there too (``pyproject.toml``); ``careloop.BUILTIN_PLUGINS`` names the same modules so that a
source checkout that was never installed works, and fixes their order. The engine itself names no
engine above it: what forms, flows, rules, reports and web add (tables, migrations, translations,
routes, templates, static files, inbound events) comes from their hook implementations
(``engine/hookspecs.py``).

    >>> manager = make_manager()
    >>> "careloop.engine:migrations/versions" in migration_locations(manager)
    True
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from careloop.engine import hookspecs
from careloop.engine.hookspecs import PROJECT, hookimpl

if TYPE_CHECKING:
    from careloop.engine.registry import Registry

PLUGIN_GROUP = "careloop.plugins"


def builtin_modules() -> tuple[str, ...]:
    """The built-in plugin modules, in load order (from the top-level ``careloop`` package)."""
    import careloop

    return tuple(getattr(careloop, "BUILTIN_PLUGINS", ()))


def entry_point_modules() -> list[tuple[str, str]]:
    """``(entry point name, value)`` of every installed plugin, in a stable order."""
    found = metadata.entry_points(group=PLUGIN_GROUP)
    return sorted(((ep.name, ep.value) for ep in found), key=lambda item: item[1])


class _RegisterFunction:
    """A plugin module's plain ``register(registry)`` as its ``register_types`` hook."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    @hookimpl
    def register_types(self, registry: Registry) -> None:
        self.module.register(registry)


def _import(value: str) -> object | None:
    """The plugin an entry point value names (``module`` or ``module:attribute``); ``None`` for a
    built-in engine module that does not exist (an engine not written yet)."""
    module_name, _, attribute = value.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(f"{missing}."):
            raise  # the plugin is there but something it imports is not: a real error
        return None
    return getattr(module, attribute) if attribute else module


def make_manager(extra: Iterable[str | object] = (), *,
                 installed: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, the installed extensions (unless ``installed`` is
    false) and ``extra`` plugins (modules or their import names), in that order. A plugin given
    twice (an extension both installed and passed in) is loaded once."""
    values: list[str | object] = list(builtin_modules())
    if installed:
        values += [value for _, value in entry_point_modules()]
    values += list(extra)
    plugins: list[tuple[str, object]] = []
    seen: set[str] = set()
    for value in values:
        plugin = _import(value) if isinstance(value, str) else value
        if plugin is None:
            continue
        name = getattr(plugin, "__name__", None) or str(id(plugin))
        if name in seen:
            continue
        seen.add(name)
        plugins.append((name, plugin))
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    # pluggy calls the last registered first: register in reverse so hooks run in load order.
    for name, plugin in reversed(plugins):
        manager.register(plugin, name=name)
        if callable(getattr(plugin, "register", None)) and not hasattr(plugin, "register_types"):
            manager.register(_RegisterFunction(plugin), name=f"{name}:register")  # type: ignore[arg-type]
    return manager


def add_plugin(manager: pluggy.PluginManager, plugin: ModuleType) -> bool:
    """Register one more plugin module on ``manager`` unless it is there already (an installed
    extension); says whether it was added. Its hooks run after the others'."""
    if manager.get_plugin(plugin.__name__) is not None:
        return False
    manager.register(plugin, name=plugin.__name__)
    if callable(getattr(plugin, "register", None)) and not hasattr(plugin, "register_types"):
        manager.register(_RegisterFunction(plugin), name=f"{plugin.__name__}:register")
    return True


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_derived: list[Callable[[], None]] = []


def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager: built-ins and installed extensions (made once)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = make_manager()
        return _manager


def derived(clear: Callable[[], None]) -> None:
    """Declare a cache built from hook answers (the merged i18n catalogue, the Jinja
    environment…): :func:`use_manager` clears it when the plugins change."""
    _derived.append(clear)


@contextmanager
def use_manager(manager: pluggy.PluginManager) -> Iterator[pluggy.PluginManager]:
    """Answer every hook but ``register_types`` from ``manager`` for a while (a test of one more
    plugin's routes, templates or translations); the registry's catalogues are not reloaded."""
    global _manager
    saved = plugin_manager()
    with _lock:
        _manager = manager
    for clear in _derived:
        clear()
    try:
        yield manager
    finally:
        with _lock:
            _manager = saved
        for clear in _derived:
            clear()


def _flat(results: Iterable[Sequence[Any] | None]) -> list[Any]:
    return [item for result in results if result for item in result]


def _hook(manager: pluggy.PluginManager | None) -> Any:
    return (manager or plugin_manager()).hook


def model_modules(manager: pluggy.PluginManager | None = None) -> list[str]:
    return _flat(_hook(manager).model_modules())


def migration_locations(manager: pluggy.PluginManager | None = None) -> list[str]:
    return _flat(_hook(manager).migration_locations())


def translation_dirs(manager: pluggy.PluginManager | None = None) -> list[str]:
    return _flat(_hook(manager).translation_dirs())


def routers(manager: pluggy.PluginManager | None = None) -> list[Any]:
    return _flat(_hook(manager).routers())


def template_dirs(manager: pluggy.PluginManager | None = None) -> list[str]:
    return _flat(_hook(manager).template_dirs())


def static_dirs(manager: pluggy.PluginManager | None = None) -> list[tuple[str, str, str]]:
    return _flat(_hook(manager).static_dirs())


def inbound_event_types(
        manager: pluggy.PluginManager | None = None) -> dict[str, Mapping[str, Any]]:
    """Every event type the events API accepts, with the JSON Schema of its payload."""
    return dict(_flat(_hook(manager).inbound_event_types()))


def register_types(registry: Registry, manager: pluggy.PluginManager | None = None) -> None:
    _hook(manager).register_types(registry=registry)


def split_location(location: str) -> tuple[str, str]:
    """``"package:folder/sub"`` → ``("package", "folder/sub")``."""
    package, _, folder = location.partition(":")
    return package, folder
