"""The form as FHIR sees it: the item tree (parents kept by the import), each field's FHIR
mapping, texts with their translation, linkIds and the canonical URL. Shared by the
Questionnaire export (:mod:`careloop.forms.fhir`) and the QuestionnaireResponse side
(:mod:`careloop.forms.fhir_qr`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.forms.fhir_import import TRANSLATION
from careloop.forms.fields import FhirMap
from careloop.forms.spec import FieldSpec, FormSpec, ScoreSpec


class FhirExportError(CareloopError):
    """A form holds a field whose type declares no FHIR mapping: refused, never a guess."""


def fhir_map(field: FieldSpec) -> FhirMap:
    """The field's type's FHIR mapping (:attr:`FieldType.fhir`); a type without one cannot be
    exported."""
    ftype = loaded_registry().catalogue("field_type").get(field.type)
    mapping: FhirMap | None = getattr(ftype, "fhir", None)
    if mapping is None:
        raise FhirExportError(f"field '{field.key}': field type '{field.type}' declares no FHIR "
                              "item type (FieldType.fhir), so the form cannot be exported")
    return mapping


def _items_meta(spec: FormSpec) -> Mapping[str, Mapping[str, Any]]:
    items = spec.meta.get("items") if spec.meta else None
    return items if isinstance(items, Mapping) else {}


def _text(label: Mapping[str, str], locale: str) -> tuple[str | None, dict[str, Any] | None]:
    """``text`` in ``locale`` and ``_text`` carrying the other language as a translation."""
    if not label:
        return None, None
    main = label.get(locale)
    if main is None:  # no text in this language: the text as written, nothing to translate
        return next(iter(label.values())), None
    others = {k: v for k, v in label.items() if k != locale}
    if not others:
        return main, None
    return main, {"extension": [{"url": TRANSLATION, "extension": [
        {"url": "lang", "valueCode": lang}, {"url": "content", "valueString": text}]}
        for lang, text in others.items()]}


def _link(field: FieldSpec) -> str:
    return field.link_id or field.key


def canonical(spec: FormSpec) -> str:
    """The Questionnaire's canonical URL: the imported one, else a stable URN of the form."""
    url = spec.meta.get("url") if spec.meta else None
    return str(url) if url else f"urn:careloop:form:{spec.key}"


class _Tree:
    """The form as FHIR's item tree (parents from the import, else flat)."""

    def __init__(self, spec: FormSpec) -> None:
        self.spec = spec
        self.meta = _items_meta(spec)
        self.by_key: dict[str, FieldSpec] = {}
        self.parent_of: dict[str, str | None] = {}
        self.order: list[FieldSpec] = []
        for top in spec.fields:
            self._index(top, None)

    def _index(self, field: FieldSpec, group: str | None) -> None:
        self.by_key[field.key] = field
        self.order.append(field)
        parent = self.meta.get(field.key, {}).get("parent")
        self.parent_of[field.key] = str(parent) if parent else group
        for sub in field.fields:
            self._index(sub, field.key)

    def children(self, parent: FieldSpec | None) -> list[FieldSpec]:
        wanted = parent.key if parent is not None else None
        return [f for f in self.order if self.parent_of.get(f.key) == wanted]

    def has_children(self, key: str) -> bool:
        return key in self.parent_of.values() or any(
            (m.get("parent") == key) for m in self.meta.values() if isinstance(m, Mapping))

    def scores_under(self, parent: str | None) -> list[tuple[int, ScoreSpec]]:
        out = []
        for score in self.spec.scores:
            meta = self.meta.get(score.key, {})
            if (score.method == "fhirpath" or meta.get("total")) and \
                    (meta.get("parent") or None) == parent:
                out.append((int(meta.get("position", 10**6)), score))
        return sorted(out, key=lambda pair: pair[0])

    def condition(self, key: str) -> str | None:
        field = self.by_key.get(key)
        return field.visible_if.source if field is not None and field.visible_if else None


