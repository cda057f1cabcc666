"""Docs coverage: every registered source, dimension, measure, chart type and drill level of the
report engine is named in docs/reports.md."""

from pathlib import Path

from ..conftest import core_registry

DOC = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text("utf-8")


def test_every_report_catalogue_name_is_documented() -> None:
    registry = core_registry()  # an extension documents its own types
    missing = [f"{sort}:{name}" for sort in ("report_source", "report_dimension",
                                             "report_measure", "report_chart_type",
                                             "report_drill_level")
               for name in registry.catalogue(sort).names() if f"`{name}`" not in DOC]
    assert missing == []
    for kind in ("dataset", "chart", "dashboard", "alert"):
        assert f"| `{kind}` |" in DOC
