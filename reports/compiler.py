"""Checkers and compilers of the four report kinds: dataset, chart, alert, dashboard.

Structure is checked by the JSON Schemas (unknown dimension / measure names come from the
registry's catalogues); these functions check meaning and return frozen specs::

    dimensions: [department, month]            ->  DatasetSpec(dimensions=("department", "month"),
    measures: [{key: nps, type: nps,                measures=(MeasureSpec("nps", "nps",
                field: nps, min_sample: 30}]                               field="nps", …),))

A chart or alert may refer to a dataset by key or embed one (a full ``kind: dataset`` mapping);
a dashboard tile may likewise embed a chart. Embedded parts are checked at their own path, so a
problem in them still points at the right line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from careloop.engine.check import CompileContext, Definition
from careloop.engine.errors import Path, did_you_mean
from careloop.engine.i18n import pick
from careloop.engine.registry import loaded_registry
from careloop.engine.schema import schema_problems
from careloop.engine.services import FIELD_KEYS, find_service
from careloop.engine.sources import Document
from careloop.reports import dialect as dl
from careloop.reports.dialect import target_dialect
from careloop.reports.measures import MeasureType
from careloop.reports.metrics import SourceInfo
from careloop.reports.spec import (
    AlertSpec,
    ChartSpec,
    DashboardSpec,
    DatasetSpec,
    MeasureSpec,
    TileSpec,
)

if TYPE_CHECKING:
    from careloop.reports.chart_types import ChartType


@dataclass(frozen=True, slots=True)
class _Part:
    """One (possibly embedded) definition body and where it sits in its document."""

    doc: Document
    body: dict[str, Any]
    at: Path

    def problem(self, code: str, message: str, path: Path, **kw: Any) -> Any:
        return self.doc.problem(code, message, (*self.at, *path), **kw)


def dataset_from_body(key: str, body: dict[str, Any], content_hash: str = "") -> DatasetSpec:
    """Build the spec of a structurally valid dataset body (also used for stored bodies)."""
    measures = tuple(MeasureSpec(
        key=m["key"], type=m["type"], min_sample=int(m.get("min_sample", 0)),
        options=MappingProxyType({k: v for k, v in m.items()
                                  if k not in ("key", "type", "title", "min_sample")}))
        for m in body["measures"])
    where = tuple((d, tuple(v)) for d, v in sorted((body.get("where") or {}).items()))
    rng = body.get("answer_range")
    answer_range = (rng["field"], rng.get("min"), rng.get("max")) if rng else None
    return DatasetSpec(key=key, title=body.get("title", {}), source=body["source"],
                       dimensions=tuple(body.get("dimensions", ())), measures=measures,
                       forms=tuple(body.get("forms", ())), where=where,
                       answer_range=answer_range, content_hash=content_hash,
                       last_days=int(body["last_days"]) if body.get("last_days") else None)


# ---- dataset ----------------------------------------------------------------------------------

def _check_dimensions(p: _Part, ctx: CompileContext, source: SourceInfo) -> None:
    dims = loaded_registry().catalogue("report_dimension")
    for i, name in enumerate(p.body.get("dimensions", ())):
        if name in dims and name not in source.dimensions:
            ctx.add(p.problem("dataset.dimension-not-available",
                              f"dimension '{name}' is not available on source '{source.name}'",
                              ("dimensions", i),
                              hint="available: " + ", ".join(sorted(source.dimensions))))
    for name in p.body.get("where") or {}:
        if name not in source.dimensions:
            ctx.add(p.problem("dataset.unknown-dimension",
                              f"where: no dimension '{name}' on source '{source.name}'",
                              ("where", name), at_key=True,
                              hint=did_you_mean(name, sorted(source.dimensions))))


def _check_measures(p: _Part, ctx: CompileContext, source: SourceInfo) -> None:
    catalogue = loaded_registry().catalogue("report_measure")
    seen = set(p.body.get("dimensions", ()))
    dialect = target_dialect()
    for i, m in enumerate(p.body["measures"]):
        info: MeasureType | None = catalogue.get(m["type"])
        if m["key"] in seen:
            ctx.add(p.problem("dataset.duplicate-column",
                              f"column '{m['key']}' is defined twice", ("measures", i, "key")))
        seen.add(m["key"])
        if info is None:
            continue
        if source.name not in info.sources:
            available = sorted(n for n, t in catalogue.items() if source.name in t.sources)
            ctx.add(p.problem("dataset.measure-not-available",
                              f"measure '{m['type']}' is not available on source "
                              f"'{source.name}'", ("measures", i, "type"),
                              hint="available: " + ", ".join(available)))
        if not info.computes_on(dialect):
            ctx.add(p.problem(
                "dataset.measure-needs-database",
                f"measure '{info.name}' cannot be computed on "
                f"{dl.DIALECT_NAMES.get(dialect, dialect)}, this installation's database; it "
                "needs " + " or ".join(dl.DIALECT_NAMES.get(d, d) for d in sorted(info.dialects
                                                                                 or ())),
                ("measures", i, "type"),
                hint="choose another measure, or run Careloop on a database that computes it "
                     "(CARELOOP_DATABASE_URL)"))
        _check_measure_options(p, ctx, info, m, ("measures", i))
        _check_field_exists(p, ctx, m.get("field"), ("measures", i, "field"))


def _check_measure_options(p: _Part, ctx: CompileContext, info: MeasureType,
                           m: dict[str, Any], path: Path) -> None:
    """The measure mapping against its type's own schema, each problem at the option.

    ``{key: x, type: nps, fraction: 0.9}`` → ``dataset.bad-measure-option`` at
    ``$.measures[0].fraction``: measure 'nps' has no option 'fraction'.
    """
    allowed = list(info.schema["properties"])
    for error in sorted(info.validator.iter_errors(m), key=lambda e: list(e.path)):
        where = (*path, *error.path)
        if error.validator == "required":
            missing = [r for r in error.validator_value if r not in error.instance]
            for name in missing:
                if name == "field":
                    ctx.add(p.problem("dataset.missing-field", f"measure '{info.name}' needs "
                                      "'field' (the answered field key)", where,
                                      hint="e.g. field: nps"))
                else:
                    ctx.add(p.problem("dataset.missing-option",
                                      f"measure '{info.name}' needs option '{name}'", where))
        elif error.validator == "additionalProperties":
            for extra in sorted(set(error.instance) - set(allowed)):
                ctx.add(p.problem("dataset.bad-measure-option", f"measure '{info.name}' has no "
                                  f"option '{extra}'", (*where, extra), at_key=True,
                                  hint=did_you_mean(extra, allowed)
                                  or "options: " + ", ".join(allowed)))
        else:
            ctx.add(p.problem("dataset.bad-measure-option",
                              f"measure '{info.name}': {error.message}", where))


def _check_answer_range(p: _Part, ctx: CompileContext, source: SourceInfo) -> None:
    rng = p.body.get("answer_range")
    if rng is None:
        return
    if source.name != "submissions":
        ctx.add(p.problem("dataset.answer-range-source", "answer_range needs source "
                          "'submissions'", ("answer_range",), at_key=True))
    _check_field_exists(p, ctx, rng["field"], ("answer_range", "field"))


def _check_field_exists(p: _Part, ctx: CompileContext, field: object, path: Path) -> None:
    """When the dataset names forms and the forms engine offers field keys, check the field."""
    service = find_service(loaded_registry(), FIELD_KEYS)
    forms = p.body.get("forms") or []
    if not isinstance(field, str) or service is None or not forms:
        return
    known: set[str] = set()
    for i, form_key in enumerate(forms):
        target = ctx.reference("form", form_key, p.doc, (*p.at, "forms", i),
                               code="dataset.unknown-form")
        body = target.body if isinstance(target, Definition) else target
        if body is None or "fields" not in body:
            return  # missing (reported above), or stored and taken as checked
        known |= set(service(body))
    if field.split(".")[0] not in known and field not in known:
        ctx.add(p.problem("dataset.unknown-field",
                          f"no field '{field}' in form(s) {', '.join(forms)}", path,
                          hint=did_you_mean(field, sorted(known))))


def _compile_dataset_part(p: _Part, key: str, ctx: CompileContext,
                          content_hash: str = "") -> DatasetSpec | None:
    source: SourceInfo = loaded_registry().catalogue("report_source")[p.body["source"]]
    before = len(ctx.problems)
    _check_dimensions(p, ctx, source)
    _check_measures(p, ctx, source)
    _check_answer_range(p, ctx, source)
    if len(ctx.problems) > before:
        return None
    return dataset_from_body(key, p.body, content_hash)


def compile_dataset(d: Definition, ctx: CompileContext) -> DatasetSpec | None:
    return _compile_dataset_part(_Part(d.doc, d.body, ()), d.key, ctx, d.content_hash)


# ---- references or embedded parts -------------------------------------------------------------

def _embedded(p: _Part, kind: str, path: Path, ctx: CompileContext) -> _Part | None:
    """Structure-check an embedded ``kind`` mapping at ``path``; None if it is broken."""
    problems = schema_problems(p.doc, kind, (*p.at, *path))
    for problem in problems:
        ctx.add(problem)
    if problems:
        return None
    body: Any = p.body
    for part in path:
        body = body[part]
    return _Part(p.doc, body, (*p.at, *path))


def _dataset_of(p: _Part, ctx: CompileContext) -> tuple[bool, DatasetSpec | None]:
    """(the dataset exists, its spec when it can be checked against).

    A stored dataset already passed its own checks when it was imported; when only its presence
    is known (recompiling a stored version) the columns are not checked again.
    """
    ref = p.body.get("dataset")
    if isinstance(ref, dict):
        inner = _embedded(p, "dataset", ("dataset",), ctx)
        if inner is None:
            return False, None
        spec = _compile_dataset_part(inner, inner.body["key"], ctx)
        return spec is not None, spec
    target = ctx.reference("dataset", ref, p.doc, (*p.at, "dataset"),
                           code="ref.unknown-dataset")
    if isinstance(target, Definition):
        found: DatasetSpec | None = ctx.spec_of("dataset", target.key)
        return found is not None, found
    if isinstance(target, dict):
        if "measures" in target and "source" in target:
            return True, dataset_from_body(str(ref), target)
        return True, None
    return False, None


# ---- chart ------------------------------------------------------------------------------------

def _check_encoding(p: _Part, ctx: CompileContext, dataset: DatasetSpec | None) -> None:
    """The encoding and options against the chart type's own needs: its required channels
    (a word cloud's ``text``), the channels naming dataset columns, its ``options:`` schema."""
    kind: ChartType | None = loaded_registry().catalogue("report_chart_type").get(p.body["type"])
    if kind is None:  # the schema's enum reports it
        return
    encoding: dict[str, str] = p.body["encoding"]
    for channel, words in kind.required.items():
        if channel not in encoding:
            ctx.add(p.problem("chart.missing-channel", f"chart type '{kind.name}' needs "
                              f"encoding.{channel} ({pick(dict(words), 'en')})", ("encoding",)))
    for channel, column in encoding.items():
        if not kind.names_column(channel) or dataset is None:
            continue
        if column not in dataset.columns:
            ctx.add(p.problem(
                "chart.unknown-field",
                f"encoding.{channel}: dataset '{dataset.key}' has no column '{column}'",
                ("encoding", channel), hint=did_you_mean(column, dataset.columns)
                or "columns: " + ", ".join(dataset.columns)))
    options = p.body.get("options") or {}
    for error in kind.validator.iter_errors(options):
        if error.validator == "additionalProperties":
            allowed = list(kind.options)
            for extra in sorted(set(error.instance) - set(allowed)):
                ctx.add(p.problem("chart.bad-option", f"chart type '{kind.name}' has no option "
                                  f"'{extra}'", ("options", *error.path, extra), at_key=True,
                                  hint=did_you_mean(extra, allowed)
                                  or ("options: " + ", ".join(allowed) if allowed else None)))
            continue
        ctx.add(p.problem("chart.bad-option", f"chart type '{kind.name}': {error.message}",
                          ("options", *error.path)))


def _compile_chart_part(p: _Part, key: str, title: dict[str, str],
                        ctx: CompileContext) -> ChartSpec | None:
    found, dataset = _dataset_of(p, ctx)
    if not found:
        return None
    before = len(ctx.problems)
    _check_encoding(p, ctx, dataset)
    if len(ctx.problems) > before:
        return None
    ref = p.body["dataset"]
    return ChartSpec(key=key, title=title, dataset=ref["key"] if isinstance(ref, dict) else ref,
                     type=p.body["type"], encoding=dict(p.body["encoding"]),
                     threshold=p.body.get("threshold"),
                     compare_previous=bool(p.body.get("compare_previous", False)),
                     options=MappingProxyType(dict(p.body.get("options") or {})),
                     inline_dataset=dataset if isinstance(ref, dict) else None)


def compile_chart(d: Definition, ctx: CompileContext) -> ChartSpec | None:
    return _compile_chart_part(_Part(d.doc, d.body, ()), d.key, d.title, ctx)


# ---- dashboard and alert ----------------------------------------------------------------------

def compile_dashboard(d: Definition, ctx: CompileContext) -> DashboardSpec | None:
    tiles = []
    before = len(ctx.problems)
    whole = _Part(d.doc, d.body, ())
    for i, tile in enumerate(d.body["tiles"]):
        ref, inline = tile["chart"], None
        if isinstance(ref, dict):
            inner = _embedded(whole, "chart", ("tiles", i, "chart"), ctx)
            if inner is not None:
                inline = _compile_chart_part(inner, ref["key"], ref["title"], ctx)
            ref = ref.get("key", "")
        else:
            ctx.reference("chart", ref, d.doc, ("tiles", i, "chart"), code="ref.unknown-chart")
        tiles.append(TileSpec(chart=ref, width=int(tile.get("width", 6)), inline=inline))
    if len(ctx.problems) > before:
        return None
    return DashboardSpec(key=d.key, title=d.title, tiles=tuple(tiles),
                         filters=tuple(d.body.get("filters", ("date_range", "department",
                                                              "form"))),
                         drilldown=tuple(d.body.get("drilldown", ())),
                         before_after=d.body.get("before_after"))


def compile_alert(d: Definition, ctx: CompileContext) -> AlertSpec | None:
    found, dataset = _dataset_of(_Part(d.doc, d.body, ()), ctx)
    if not found:
        return None
    measure = d.body["measure"]
    if dataset is not None and dataset.measure(measure) is None:
        ctx.add(d.doc.problem("alert.unknown-measure",
                              f"dataset '{dataset.key}' has no measure '{measure}'", ("measure",),
                              hint=did_you_mean(measure, [m.key for m in dataset.measures])
                              or "measures: " + ", ".join(m.key for m in dataset.measures)))
        return None
    ref = d.body["dataset"]
    cond = d.body["condition"]
    return AlertSpec(key=d.key, title=d.title,
                     dataset=ref["key"] if isinstance(ref, dict) else ref, measure=measure,
                     group_by=d.body["group_by"], op=cond["op"], value=float(cond["value"]),
                     window_days=int(d.body.get("window_days", 14)),
                     pending_minutes=int(d.body.get("pending_minutes", 0)),
                     severity=d.body.get("severity", "warning"),
                     inline_dataset=dataset if isinstance(ref, dict) else None)
