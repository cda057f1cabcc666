"""Compiled report definitions: frozen specs (behaviour lives in runtime modules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class MeasureSpec:
    """One output column of a dataset: ``{key: nps, type: nps, field: nps, min_sample: 30}``.

    ``options`` holds what the measure type's own schema allows (``field``, ``fraction``,
    ``days`` …), checked per type at compile time (:mod:`careloop.reports.measures`).
    """

    key: str
    type: str
    min_sample: int = 0
    options: Mapping[str, Any] = dc_field(default_factory=lambda: MappingProxyType({}))

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value

    @property
    def field(self) -> str | None:
        """The answered field a field measure reads (``None`` for the others)."""
        value = self.options.get("field")
        return value if isinstance(value, str) else None

    @property
    def row(self) -> str | None:
        value = self.options.get("row")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A declarative query: a source, group-by dimensions, measures and fixed filters."""

    key: str
    title: Mapping[str, str]
    source: str
    dimensions: tuple[str, ...]
    measures: tuple[MeasureSpec, ...]
    forms: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Only submissions whose answer to ``field`` lies in [min, max] (e.g. dissatisfied: overall<=2)
    answer_range: tuple[str, float | None, float | None] | None = None
    content_hash: str = ""
    # Only rows of the last N days (hospital-local, today included): "最近 90 天"
    last_days: int | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return self.dimensions + tuple(m.key for m in self.measures)

    def measure(self, key: str) -> MeasureSpec | None:
        return next((m for m in self.measures if m.key == key), None)


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """A Vega-Lite (or word-cloud) view of one dataset."""

    key: str
    title: Mapping[str, str]
    dataset: str
    type: str
    encoding: Mapping[str, str]
    threshold: float | None = None
    compare_previous: bool = False
    inline_dataset: DatasetSpec | None = None  # an embedded dataset instead of a key
    options: Mapping[str, Any] = dc_field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class TileSpec:
    chart: str
    width: int = 6
    inline: ChartSpec | None = None  # an embedded chart instead of a key


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    """Tiles, the global filters offered, and the drill-down path."""

    key: str
    title: Mapping[str, str]
    tiles: tuple[TileSpec, ...]
    filters: tuple[str, ...] = ("date_range", "department", "form")
    drilldown: tuple[str, ...] = ()
    before_after: str | None = None  # ISO date splitting "before" and "after"


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """A threshold on a dataset's measure per group, with a pending period."""

    key: str
    title: Mapping[str, str]
    dataset: str
    measure: str
    group_by: str
    op: str
    value: float
    window_days: int = 14
    pending_minutes: int = 0
    severity: str = "warning"
    inline_dataset: DatasetSpec | None = None
