"""Registers the report engine: four kinds, its catalogues, CLI commands and alert services."""

from __future__ import annotations

from sqlalchemy import Engine

from careloop.engine.db import transaction
from careloop.engine.hookspecs import hookimpl
from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry

DRILL_LEVELS = ("hospital", "department", "ward", "doctor", "nursing_group", "responses")


def register(registry: Registry) -> None:
    """Called once by :meth:`Registry.load_plugins`."""
    from careloop.reports import compiler, measures, metrics
    from careloop.reports.cli import report

    for source in metrics.SOURCES:
        registry.catalogue("report_source").register(source.name, source)
    for dim in metrics.DIMENSIONS:
        registry.catalogue("report_dimension").register(dim.name, dim)
    from careloop.reports import roi

    for measure in (*measures.MEASURES, *roi.MEASURES):
        registry.catalogue("report_measure").register(measure.name, measure)
    from careloop.reports.chart_types import CHART_TYPES

    for chart_type in CHART_TYPES:
        registry.catalogue("report_chart_type").register(chart_type.name, chart_type)
    for level in DRILL_LEVELS:
        registry.catalogue("report_drill_level").register(level, level)
    kinds = registry.catalogue("kind")
    pkg = "careloop.reports"
    kinds.register("dataset", KindSpec(
        name="dataset", package=pkg, schema_file="schema/dataset.json",
        compile=compiler.compile_dataset, folder="reports",
        title={"zh-CN": "数据集", "en": "Dataset"}, order=60))
    kinds.register("chart", KindSpec(
        name="chart", package=pkg, schema_file="schema/chart.json",
        compile=compiler.compile_chart, folder="reports",
        title={"zh-CN": "图表", "en": "Chart"}, order=70))
    kinds.register("alert", KindSpec(
        name="alert", package=pkg, schema_file="schema/alert.json",
        compile=compiler.compile_alert, folder="reports",
        title={"zh-CN": "指标预警", "en": "Metric alert"}, order=75))
    kinds.register("dashboard", KindSpec(
        name="dashboard", package=pkg, schema_file="schema/dashboard.json",
        compile=compiler.compile_dashboard, folder="reports",
        title={"zh-CN": "仪表板", "en": "Dashboard"}, order=80))
    registry.catalogue("cli").register("report", report)
    # The scheduler tick (web runtime) and other engines look the alert sweep up by name.
    from careloop.engine.services import RUN_ALERTS, register_service
    from careloop.reports.alerts import run_alerts

    register_service(registry, RUN_ALERTS, run_alerts)

    def alerts_tick(engine: Engine) -> None:
        with transaction(engine) as session:
            run_alerts(session)

    registry.catalogue("tick").register("reports.alerts", alerts_tick)
    from careloop.reports.people_monthly import run_monthly

    registry.catalogue("tick").register("reports.people_monthly", run_monthly)

# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.reports.models", "careloop.reports.people_models"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.reports:migrations"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.reports:data/i18n"]
