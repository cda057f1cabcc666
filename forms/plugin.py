"""Registers the form engine: the ``form`` kind, field types, score methods, services, CLI."""

from __future__ import annotations

from careloop.engine.hookspecs import hookimpl
from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.forms import services
    from careloop.forms.compiler import compile_form
    from careloop.forms.fields import BUILTIN_FIELD_TYPES
    from careloop.forms.scoring import BUILTIN_SCORE_METHODS

    types = registry.catalogue("field_type")
    for ftype in BUILTIN_FIELD_TYPES:
        types.register(ftype.name, ftype)
    methods = registry.catalogue("score_method")
    for method in BUILTIN_SCORE_METHODS:
        methods.register(method.name, method)
    from careloop.forms.fhirpath import METHOD as FHIRPATH

    methods.register(FHIRPATH.name, FHIRPATH)
    registry.catalogue("kind").register("form", KindSpec(
        name="form", package="careloop.forms", schema_file="schema/form.json",
        compile=compile_form, folder="forms", title={"zh-CN": "表单", "en": "Form"}, order=20))
    from careloop.forms.touchpoints import compile_touchpoint

    registry.catalogue("kind").register("touchpoint", KindSpec(
        name="touchpoint", package="careloop.forms", schema_file="schema/touchpoint.json",
        compile=compile_touchpoint, folder="touchpoints",
        title={"zh-CN": "服务触点", "en": "Touchpoint"}, order=25))
    services.register(registry)
    from careloop.forms.requests import handle_event

    registry.catalogue("event_handler").register("forms", handle_event)
    registry.catalogue("demo_seeder").register("forms", _demo_seeder())
    registry.catalogue("demo_seeder").register("touchpoints", _touchpoint_seeder())
    try:
        from careloop.forms.cli import form
    except ImportError:  # pragma: no cover - the CLI needs click, always installed
        return
    registry.catalogue("cli").register("form", form)


def _demo_seeder() -> object:
    from careloop.forms.demo import seed_forms

    return seed_forms


def _touchpoint_seeder() -> object:
    from careloop.forms.touchpoint_demo import seed_touchpoints

    return seed_touchpoints

# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.forms.models"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.forms:migrations"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.forms:data/i18n"]
