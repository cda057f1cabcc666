"""Typed seams between engines: services looked up by a typed key, stored specs by their type."""

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine

from careloop.engine import services, store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.registry import Registry, loaded_registry

ROOT = Path(__file__).resolve().parents[2]


def test_every_known_service_is_registered_by_its_engine() -> None:
    registry = loaded_registry()
    for key in services.KNOWN:
        found = services.service(registry, key)
        assert callable(found), key.name
        assert found.__module__.startswith(f"careloop.{key.provider}."), (key.name,
                                                                           found.__module__)


def test_a_missing_service_names_itself_and_its_engine() -> None:
    empty = Registry()
    assert services.find_service(empty, services.OUTBOX_ENQUEUE) is None
    with pytest.raises(services.ServiceMissing, match=r"'outbox\.enqueue'.*the flows engine"):
        services.service(empty, services.OUTBOX_ENQUEUE)


def test_register_service_puts_the_function_under_its_name() -> None:
    registry = Registry()

    def keys(body: object, /) -> frozenset[str]:
        return frozenset({"a"})

    services.register_service(registry, services.FIELD_KEYS, keys)
    assert registry.catalogue("service")["forms.field_keys"] is keys
    assert services.service(registry, services.FIELD_KEYS)({}) == frozenset({"a"})


def test_compile_row_checks_the_spec_type(engine: Engine, tmp_path: Path) -> None:
    from careloop.engine.templates import TemplateSpec
    from careloop.flows.spec import FlowSpec

    target = tmp_path / "common"
    shutil.copytree(ROOT / "app_definitions" / "common", target)
    import_bundle(target)
    with transaction() as session:
        row = store.list_current(session, "template")[0]
        spec = store.compile_row(row, TemplateSpec)
        assert isinstance(spec, TemplateSpec) and spec.key == row.key
        with pytest.raises(store.SpecMismatch,
                           match=rf"stored template '{row.key}' v{row.version} compiles "
                                 r"to TemplateSpec, not FlowSpec"):
            store.compile_row(row, FlowSpec)
