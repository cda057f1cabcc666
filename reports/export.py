"""Exports: a tile's rows as CSV or XLSX; a chart as PNG, SVG or PDF rendered server-side.

Rendering uses vl-convert with the Noto CJK fonts (Debian package ``fonts-noto-cjk``) so Chinese
labels are drawn, not boxes. Without the fonts the export refuses with a clear message rather than
producing an image full of empty rectangles.
"""

from __future__ import annotations

import csv
import importlib
import io
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from careloop.reports.dialect import ReportError
from careloop.reports.query import ResultTable

FONT_DIRS = ("/usr/share/fonts/opentype/noto", "/usr/share/fonts/truetype/noto")
IMAGE_FORMATS = ("png", "svg", "pdf")


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): a patient's comment
# "=HYPERLINK(...)" must open as the text the patient typed, never run on the analyst's machine.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def inert(value: object) -> object:
    """Text that starts like a formula gets a leading apostrophe; numbers and dates pass as they
    are (a negative number is a number, not text)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(result: ResultTable, headers: Mapping[str, str] | None = None,
           na: str = "n/a", newline: str = "\n") -> str:
    """The rows as CSV text; ``headers`` name the columns for a person (科室, 净推荐值)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow([inert((headers or {}).get(c, c)) for c in result.columns])
    for row in result.rows:
        writer.writerow([na if row.get(c) is None else inert(row[c]) for c in result.columns])
    return out.getvalue()


def csv_bytes(text: str) -> bytes:
    """UTF-8 with a byte-order mark: Excel (zh-CN Windows) otherwise opens it as GBK and shows
    mojibake."""
    return text.encode("utf-8-sig")


def to_xlsx(result: ResultTable, sheet: str = "data",
            headers: Mapping[str, str] | None = None, na: str = "n/a") -> bytes:
    # openpyxl has no bundled type information; used through Any.
    book: Any = importlib.import_module("openpyxl").Workbook()
    ws = book.active
    ws.title = sheet[:31]
    ws.append([(headers or {}).get(c, c) for c in result.columns])
    for row in result.rows:
        ws.append([na if row.get(c) is None else row[c] for c in result.columns])
    # openpyxl stores any text starting with "=" as a formula: every text cell is text.
    for cells in ws.iter_rows():
        for cell in cells:
            if isinstance(cell.value, str):
                cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


CJK_FAMILY = "Noto Sans CJK SC"
_MISSING_FONT = ("chart export needs a CJK font: install the Debian package fonts-noto-cjk "
                 "(apt-get install fonts-noto-cjk)")


@cache
def cjk_font_file() -> Path:
    """The CJK font file, resolved through fontconfig (``fc-match``), else the Debian folders.

    Raises:
        ReportError: when no Noto CJK font is installed (fontconfig then names a fallback such
            as DejaVu, which has no Chinese glyphs).
    """
    try:
        found = subprocess.run(["fc-match", "-f", "%{file}\n%{family}", f"{CJK_FAMILY}:lang=zh-cn"],
                               capture_output=True, text=True, timeout=10, check=False)
        lines = found.stdout.splitlines()
        if found.returncode == 0 and len(lines) >= 2 and "CJK" in lines[1]:
            return Path(lines[0])
    except (OSError, subprocess.TimeoutExpired):
        pass
    for folder in FONT_DIRS:
        for candidate in sorted(Path(folder).glob("NotoSansCJK*")):
            return candidate
    raise ReportError(_MISSING_FONT)


@cache
def cjk_font_dir() -> str:
    """Register the CJK font's directory with vl-convert (once per process).

    Raises:
        ReportError: when fonts-noto-cjk is not installed.
    """
    import vl_convert as vlc

    folder = str(cjk_font_file().parent)
    vlc.register_font_directory(folder)
    return folder


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
