"""The example extension package's tests: its source tree comes first on the path, so the
modules tested are the ones in this checkout even where an older copy is installed."""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = str(Path(__file__).parent / "careloop_example")
if _PACKAGE not in sys.path:
    sys.path.insert(0, _PACKAGE)
