"""What ``careloop validate`` checks: files, folders and bundle zips, as bundles where they are.

A folder holding ``app.yaml`` (or a ``.zip``) is checked as one bundle: its manifest too, and
references resolve inside it. Loose definition files are checked together per folder.

    >>> from pathlib import Path
    >>> report = validate_paths([Path("app_definitions")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from careloop.engine.bundles import MANIFEST, check_bundle, display_root, load_bundle
from careloop.engine.check import check_documents
from careloop.engine.errors import Problem
from careloop.engine.sources import DEFINITION_SUFFIXES, load_file


@dataclass(slots=True)
class ValidationReport:
    """Problems over every checked file, and how many files were read."""

    problems: list[Problem] = field(default_factory=list)
    files: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _bundle_roots(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.rglob(MANIFEST))


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(root == path or root in path.parents for root in roots)


def validate_paths(paths: list[Path]) -> ValidationReport:
    """Check everything under ``paths``; paths must exist (the CLI checks that first)."""
    report = ValidationReport()
    bundles: list[Path] = []
    loose: dict[Path, list[Path]] = defaultdict(list)
    for path in paths:
        if path.is_file() and path.suffix == ".zip":
            bundles.append(path)
        elif path.is_file() and path.name == MANIFEST:
            bundles.append(path.parent)
        elif path.is_file():
            loose[path.parent].append(path)
        else:
            roots = _bundle_roots(path)
            bundles.extend(roots)
            bundles.extend(sorted(p for p in path.rglob("*.zip") if not _inside(p, roots)))
            for file in sorted(path.rglob("*")):
                if (file.is_file() and file.suffix in DEFINITION_SUFFIXES
                        and not _inside(file, roots)):
                    loose[file.parent].append(file)
    loaded = [load_bundle(root) for root in dict.fromkeys(bundles)]
    siblings = {b.app_id: b for b in loaded if b.app_id}
    for root in {p.parent for p in bundles if p.is_dir()}:
        for extra in _bundle_roots(root):  # required apps beside the ones named
            if extra not in bundles:
                other = load_bundle(extra)
                siblings.setdefault(other.app_id or "", other)
    for bundle in loaded:
        report.files += len(bundle.documents) + 1
        report.problems.extend(check_bundle(bundle, siblings=siblings).problems)
    for _, files in sorted(loose.items()):
        docs = [load_file(f, display_root(f)) for f in dict.fromkeys(files)]
        report.files += len(docs)
        report.problems.extend(check_documents(docs).problems)
    return report
