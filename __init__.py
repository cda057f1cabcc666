"""Careloop: patient-experience management where forms, flows, rules and dashboards are data.

The repository root is the ``careloop`` import package: ``engine/`` is ``careloop.engine``,
``forms/`` is ``careloop.forms`` and so on (see ``pyproject.toml``).
"""

__version__ = "0.1.0"

# The built-in plugins, in load order: each engine registers through the same hooks an extension
# uses (engine/hookspecs.py). pyproject.toml lists the same modules as ``careloop.plugins`` entry
# points; this list keeps a source checkout that was never installed working.
BUILTIN_PLUGINS = (
    "careloop.engine.builtins",
    "careloop.forms.plugin",
    "careloop.rules.plugin",
    "careloop.flows.plugin",
    "careloop.reports.plugin",
    "careloop.web.plugin",
)
