"""Which scenarios ``careloop scenario run`` means, checked like ``careloop validate`` checks them.

    careloop scenario run                       # every app in ./app_definitions with scenarios
    careloop scenario run discharge             # the app 'discharge' (a folder there), or a path
    careloop scenario run app_definitions/discharge/scenarios/discharge_day3_answered.yaml

A scenario is checked together with its bundle and the apps beside it, so its references to forms,
templates and dashboards resolve exactly as on import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from careloop.engine.bundles import MANIFEST, check_bundle, load_bundle
from careloop.engine.errors import Problem
from careloop.web.scenarios.spec import ScenarioSpec

SCENARIO_FOLDER = "scenarios"


class UsageProblem(Exception):
    """Raised when a command-line target is neither an app, an app folder nor a scenario file
    inside an app bundle."""


@dataclass(slots=True)
class Selection:
    """The scenarios to run (with their app folders) and the problems that stop others."""

    scenarios: list[tuple[ScenarioSpec, Path]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0


def default_apps() -> Path:
    """``./app_definitions`` when it exists, else the one shipped in the package."""
    here = Path("app_definitions")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "app_definitions"


def _targets(names: list[str], apps: Path) -> dict[Path, set[Path] | None]:
    """``{app folder: scenario files (None = all)}`` for the command-line names."""
    chosen: dict[Path, set[Path] | None] = {}
    if not names:
        for manifest in sorted(apps.glob(f"*/{MANIFEST}")):
            if (manifest.parent / SCENARIO_FOLDER).is_dir():
                chosen[manifest.parent] = None
        return chosen
    for name in names:
        path = Path(name)
        if path.is_file():
            root = path.resolve().parent.parent
            if path.resolve().parent.name != SCENARIO_FOLDER or not (root / MANIFEST).is_file():
                raise UsageProblem(f"{name}: a scenario file lives in <app>/{SCENARIO_FOLDER}/")
            app = path.parent.parent
            files = chosen.get(app, set())
            if files is not None:
                files.add(path.resolve())
                chosen[app] = files
        elif (path / MANIFEST).is_file():
            chosen[path] = None
        elif (apps / name / MANIFEST).is_file():
            chosen[apps / name] = None
        else:
            raise UsageProblem(f"{name}: no app of that name in {apps}, and no such file or "
                               "app folder")
    return chosen


def select(names: list[str], apps: Path | None = None) -> Selection:
    """Check the named apps' bundles and collect their (chosen) compiled scenarios.

    Raises:
        UsageProblem: if a name is neither an app nor a scenario file in an app.
    """
    apps = apps or default_apps()
    selection = Selection()
    for app, files in _targets(names, apps).items():
        bundle = load_bundle(app)
        siblings = {}
        for manifest in sorted(app.parent.glob(f"*/{MANIFEST}")):
            other = load_bundle(manifest.parent)
            if other.app_id:
                siblings[other.app_id] = other
        result = check_bundle(bundle, siblings=siblings)
        selection.problems.extend(result.errors)
        folder = (app / SCENARIO_FOLDER).resolve()
        for (kind, _), definition in sorted(result.definitions.items()):
            if kind != "scenario":
                continue
            where = (app / definition.source_path).resolve()
            if where.parent != folder or (files is not None and where not in files):
                continue
            selection.files += 1
            spec = result.specs.get(("scenario", definition.key))
            if spec is not None:
                selection.scenarios.append((spec, app))
    return selection
