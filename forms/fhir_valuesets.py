"""Answer lists for FHIR ``answerValueSet``: expanded offline, never fetched.

A reference resolves, in order, to a ValueSet ``contained`` in the Questionnaire (``#id``), one
in the same Bundle (by ``url`` or ``ValueSet/id``), or one of the local catalogue
``forms/data/fhir_valuesets.json`` (LOINC answer lists of the instrument library: LL358-3 for
PHQ-9 / GAD-7 items, LL361-7 Yes/No; FHIR's ``yesnodontknow``). Expansion reads
``expansion.contains`` (nested ``contains`` flattened) or else ``compose.include.concept``; an
include of a whole code system, a filter or another value set cannot be expanded offline and is
refused. Each concept keeps its ``system``, and its score from the ``ordinalValue`` /
``itemWeight`` extension.

    >>> [c.code for c in resolve("http://loinc.org/vs/LL358-3", {}, {}).concepts]
    ['LA6568-5', 'LA6569-3', 'LA6570-1', 'LA6571-9']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"


@dataclass(frozen=True, slots=True)
class Concept:
    system: str | None
    code: str
    display: str
    score: float | None = None
    #: display per language from the concept's ``designation`` (language → text)
    designations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Expansion:
    """An expanded answer list, or why there is none (``problem``)."""

    concepts: tuple[Concept, ...] = ()
    source: str = ""
    problem: str | None = None


@cache
def catalogue() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The local catalogue: url → ValueSet, and alias url → url."""
    text = resources.files("careloop.forms").joinpath("data/fhir_valuesets.json").read_text(
        "utf-8")
    data = json.loads(text)
    return {vs["url"]: vs for vs in data["valueSets"]}, dict(data["aliases"])


def _score(element: Mapping[str, Any]) -> float | None:
    for ext in element.get("extension", []) or []:
        if ext.get("url") in (ORDINAL, ITEM_WEIGHT):
            value = ext.get("valueDecimal", ext.get("valueInteger"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def _concept(system: str | None, element: Mapping[str, Any]) -> Concept:
    code = str(element.get("code"))
    designations = tuple((str(d["language"]), str(d["value"]))
                         for d in element.get("designation", []) or []
                         if d.get("language") and d.get("value"))
    return Concept(system, code, str(element.get("display") or code), _score(element),
                   designations)


def _contains(items: list[Mapping[str, Any]]) -> Iterator[Concept]:
    for item in items:
        if item.get("code") is not None and not item.get("abstract"):
            yield _concept(item.get("system"), item)
        yield from _contains(list(item.get("contains", []) or []))


def expand(value_set: Mapping[str, Any], source: str) -> Expansion:
    """The concepts of one ValueSet resource."""
    contains = (value_set.get("expansion") or {}).get("contains")
    if contains:
        return Expansion(tuple(_contains(list(contains))), source)
    concepts: list[Concept] = []
    compose = value_set.get("compose") or {}
    if compose.get("exclude"):
        return Expansion(source=source, problem="compose.exclude cannot be expanded offline")
    for index, include in enumerate(compose.get("include", []) or []):
        if include.get("filter") or include.get("valueSet") or not include.get("concept"):
            return Expansion(source=source, problem=(
                f"compose.include[{index}] names a whole code system, a filter or another "
                "value set, which cannot be expanded offline"))
        concepts.extend(_concept(include.get("system"), c) for c in include["concept"])
    if not concepts:
        return Expansion(source=source, problem="the value set lists no concepts")
    return Expansion(tuple(concepts), source)


def resolve(reference: str, contained: Mapping[str, Mapping[str, Any]],
            bundle: Mapping[str, Mapping[str, Any]]) -> Expansion:
    """Expand ``answerValueSet``: contained (``#id``), in the bundle, or the local catalogue."""
    if reference.startswith("#"):
        found = contained.get(reference[1:])
        if found is None:
            return Expansion(problem=f"no contained ValueSet with id {reference[1:]!r}")
        return expand(found, "contained")
    base = reference.split("|")[0]
    for key in (base, base.replace("https://", "http://")):
        if key in bundle:
            return expand(bundle[key], "bundle")
        if key in contained:  # a contained value set referred to by its url
            return expand(contained[key], "contained")
    sets, aliases = catalogue()
    target = aliases.get(base, base)
    if target in sets:
        return expand(sets[target], "catalogue")
    return Expansion(problem=f"value set {reference!r} is neither contained, in the bundle, nor "
                             "in the local catalogue (forms/data/fhir_valuesets.json); no "
                             "terminology server is asked")


def index(resources_: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """ValueSets by ``id`` and by ``url`` (contained resources, bundle entries)."""
    out: dict[str, Mapping[str, Any]] = {}
    for resource in resources_:
        if resource.get("resourceType") != "ValueSet":
            continue
        if resource.get("id"):
            out[str(resource["id"])] = resource
            out[f"ValueSet/{resource['id']}"] = resource
        if resource.get("url"):
            out[str(resource["url"])] = resource
    return out
