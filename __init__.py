"""Careloop: patient-experience management where forms, flows, rules and dashboards are data.

The repository root is the ``careloop`` import package: ``engine/`` is ``careloop.engine``,
``forms/`` is ``careloop.forms`` and so on (see ``pyproject.toml``).
"""

__version__ = "0.1.0"
