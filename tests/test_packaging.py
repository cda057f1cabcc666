"""The code is importable only as ``careloop.*`` and every module imports under one name."""

import importlib
import pkgutil
import sys
from pathlib import Path

import careloop

ROOT = Path(__file__).resolve().parent.parent
TOP_FOLDERS = ("engine", "forms", "flows", "rules", "reports", "web")


def test_every_module_imports_under_exactly_one_name() -> None:
    names = [m.name for m in pkgutil.walk_packages(careloop.__path__, "careloop.")
             if ".migrations" not in m.name and not m.name.endswith("__main__")]
    assert "careloop.engine.cli" in names
    for name in names:
        importlib.import_module(name)
    for bare in TOP_FOLDERS:
        assert bare not in sys.modules or not getattr(sys.modules[bare], "__file__", "").startswith(
            str(ROOT)), f"{bare} was imported as a top-level name"
    files = [getattr(m, "__file__", None) for n, m in sys.modules.items()
             if n.startswith("careloop")]
    real = [f for f in files if f]
    assert len(real) == len(set(real)), "a file was imported under two module names"


def test_package_root_is_the_repository() -> None:
    assert Path(careloop.__file__).resolve().parent == ROOT
    assert careloop.__version__.count(".") == 2
