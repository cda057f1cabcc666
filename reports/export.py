"""Exports: a tile's rows as CSV or XLSX; a chart as PNG, SVG or PDF rendered server-side.

Rendering uses vl-convert with the Noto CJK fonts (Debian package ``fonts-noto-cjk``) so Chinese
labels are drawn, not boxes. Without the fonts the export refuses with a clear message rather than
producing an image full of empty rectangles.
"""

from __future__ import annotations

import csv
import importlib
import io
from functools import cache
from pathlib import Path
from typing import Any

from careloop.reports.dialect import ReportError
from careloop.reports.query import ResultTable

FONT_DIRS = ("/usr/share/fonts/opentype/noto", "/usr/share/fonts/truetype/noto")
IMAGE_FORMATS = ("png", "svg", "pdf")


def to_csv(result: ResultTable) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=result.columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: "n/a" if row[k] is None else row[k] for k in result.columns})
    return out.getvalue()


def to_xlsx(result: ResultTable, sheet: str = "data") -> bytes:
    # openpyxl has no bundled type information; used through Any.
    book: Any = importlib.import_module("openpyxl").Workbook()
    ws = book.active
    ws.title = sheet[:31]
    ws.append(result.columns)
    for row in result.rows:
        ws.append(["n/a" if row[c] is None else row[c] for c in result.columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@cache
def cjk_font_dir() -> str:
    """Register the CJK font directory with vl-convert (once per process).

    Raises:
        ReportError: when fonts-noto-cjk is not installed.
    """
    import vl_convert as vlc

    for folder in FONT_DIRS:
        if any(Path(folder).glob("NotoSansCJK*")):
            vlc.register_font_directory(folder)
            return folder
    raise ReportError("chart export needs a CJK font: install the Debian package "
                      "fonts-noto-cjk (apt-get install fonts-noto-cjk)")


def render(spec: dict[str, Any], fmt: str, *, scale: float = 1.0) -> bytes:
    """Render a Vega-Lite (or Vega, for word clouds) spec to PNG, SVG or PDF bytes."""
    import vl_convert as vlc

    if fmt not in IMAGE_FORMATS:
        raise ReportError(f"unknown image format {fmt!r}; use one of {IMAGE_FORMATS}")
    cjk_font_dir()
    is_vega = "vega/v5" in str(spec.get("$schema", ""))
    if fmt == "png":
        fn = vlc.vega_to_png if is_vega else vlc.vegalite_to_png
        return bytes(fn(spec, scale=scale))
    if fmt == "svg":
        svg = (vlc.vega_to_svg if is_vega else vlc.vegalite_to_svg)(spec)
        return str(svg).encode("utf-8")
    return bytes((vlc.vega_to_pdf if is_vega else vlc.vegalite_to_pdf)(spec))


@cache
def javascript_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one ES module, from vl-convert (no CDN)."""
    import vl_convert as vlc

    bundle: Any = vlc.javascript_bundle  # the stub marks the optional snippet as required
    return str(bundle())
