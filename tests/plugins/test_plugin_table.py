"""A plugin's own table and migration (``careloop_example/robot_calls.py``): registered through
the ``model_modules`` and ``migration_locations`` hooks only, upgraded with every core branch into
a scratch database (SQLite, or a PostgreSQL schema when the suite runs on PostgreSQL), then its
branch alone downgraded."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url

from careloop.engine import db as dbmod
from careloop.engine.migrate import current_revisions, downgrade, is_current, upgrade
from careloop.engine.models import Base, load_all_models
from careloop.engine.plugins import (
    make_manager,
    migration_locations,
    model_modules,
    plugin_manager,
)

MODULE = "careloop_example.robot_calls"


@pytest.fixture(scope="module")
def robot_calls() -> Iterator[ModuleType]:
    """The example module, imported here (not at collection) and, unless the package is
    installed, taken out of the shared metadata afterwards so the suite's database (made without
    it) still matches the models."""
    installed = plugin_manager().get_plugin(MODULE) is not None
    module = importlib.import_module(MODULE)
    try:
        yield module
    finally:
        if not installed and "robot_calls" in Base.metadata.tables:
            Base.metadata.remove(Base.metadata.tables["robot_calls"])


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Engine]:
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url and make_url(url).get_backend_name() == "postgresql":
        engine, schema = dbmod.schema_engine(url, "careloop_plugin")
        try:
            yield engine
        finally:
            engine.dispose()
            dbmod.drop_schema(url, schema)
    else:
        engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'plugin.db'}")
        yield engine
        engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_the_plugin_table_and_its_branch_downgrades_alone(
        robot_calls: ModuleType, scratch: Engine) -> None:
    with_example = make_manager([robot_calls])
    core_only = make_manager(installed=False)
    assert "careloop_example:migrations" in migration_locations(with_example)
    assert "careloop_example:migrations" not in migration_locations(core_only)

    upgrade(scratch, plugins=with_example)
    tables = _tables(scratch)
    assert "robot_calls" in tables
    assert tables == set(load_all_models(with_example).tables)  # every core table too
    assert is_current(scratch, with_example)
    assert "careloop_example_0001" in current_revisions(scratch)
    columns = {c["name"] for c in inspect(scratch).get_columns("robot_calls")}
    assert columns == {"id", "patient_id", "flow_run_id", "attempt", "outcome", "placed_at"}
    [fk] = inspect(scratch).get_foreign_keys("robot_calls")
    assert (fk["referred_table"], fk["referred_columns"]) == ("patients", ["id"])

    downgrade(scratch, "careloop_example@base", plugins=with_example)
    assert _tables(scratch) == tables - {"robot_calls"}
    assert is_current(scratch, core_only) and not is_current(scratch, with_example)
    upgrade(scratch, plugins=core_only)  # the core alone has nothing left to do
    assert "robot_calls" not in _tables(scratch)


def test_the_plugin_is_found_through_its_hooks_not_a_core_list(robot_calls: ModuleType) -> None:
    manager = make_manager([robot_calls])
    assert manager.get_plugin(MODULE) is robot_calls
    impls = {impl.plugin_name for impl in manager.hook.model_modules.get_hookimpls()}
    assert MODULE in impls
    assert MODULE in model_modules(manager)
    # Given twice (installed and passed in), it is loaded once.
    again = make_manager([robot_calls, MODULE])
    assert [p for p in again.get_plugins() if p is robot_calls] == [robot_calls]

