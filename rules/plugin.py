"""Registers the rule engine: kinds, built-in actions, the ``rules`` event handler, CLI."""

from __future__ import annotations

from careloop.engine.hookspecs import hookimpl
from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.rules import actions
    from careloop.rules.cli import rules
    from careloop.rules.compiler import compile_decision_table, compile_dictionary, compile_ruleset
    from careloop.rules.runtime import handle_event, prefetch

    kinds = registry.catalogue("kind")
    kinds.register("dictionary", KindSpec(
        name="dictionary", package="careloop.rules", schema_file="schema/dictionary.json",
        compile=compile_dictionary, folder="rules",
        title={"zh-CN": "关键词词典", "en": "Keyword dictionary"}, order=25))
    kinds.register("decision_table", KindSpec(
        name="decision_table", package="careloop.rules", schema_file="schema/decision_table.json",
        compile=compile_decision_table, folder="rules",
        title={"zh-CN": "决策表", "en": "Decision table"}, order=30))
    kinds.register("ruleset", KindSpec(
        name="ruleset", package="careloop.rules", schema_file="schema/ruleset.json",
        compile=compile_ruleset, folder="rules", title={"zh-CN": "规则集", "en": "Rule set"},
        order=40))
    actions.register(registry)
    registry.catalogue("event_handler").register("rules", handle_event)
    registry.catalogue("event_prefetch").register("rules", prefetch)
    registry.catalogue("cli").register("rules", rules)

# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.rules.models"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.rules:migrations"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.rules:data/i18n"]
