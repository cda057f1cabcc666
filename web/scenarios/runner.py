"""Runs a scenario: an isolated database, the shipped bundles, the web app driven in-process.

    with isolated_database() as engine:           # fresh SQLite file, or a fresh PostgreSQL schema
        import the scenario's app and the apps it requires (in ``requires`` order)
        for each step, with the clock frozen at the scenario's time:
            run the step through the public paths (events API, /f/{token}, /login, staff API)
            check its expectations; a failed one is reported at the expectation's file:line:col

Nothing is inserted behind the engines except the one non-public step, ``setup``, which creates
staff users and departments with the same functions the admin pages call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from careloop.engine import db as dbmod
from careloop.engine.bundles import BundleError, import_bundle, order_by_requires, requires_of
from careloop.engine.clock import frozen_now, hospital_tz
from careloop.engine.errors import DefinitionInvalid
from careloop.web.scenarios.journey import Journey, StepFailed
from careloop.web.scenarios.spec import ScenarioSpec, StepSpec, Where


@dataclass(slots=True)
class Failure:
    """A failed step or expectation: where it was written and what was seen instead."""

    where: Where
    message: str

    def render(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.where.file, "line": self.where.line, "column": self.where.column,
                "path": self.where.path, "message": self.message}


@dataclass(slots=True)
class StepResult:
    """What one step did (a line of the run's output) and how its expectations went."""

    step: StepSpec
    at: str
    done: str = ""
    checked: int = 0
    failures: list[Failure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step.index + 1, "type": self.step.type, "label": self.step.label(),
                "at": self.at, "done": self.done, "expectations": self.checked,
                "failures": [f.to_json() for f in self.failures]}


@dataclass(slots=True)
class ScenarioResult:
    """The outcome of one scenario run."""

    key: str
    file: str
    backend: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [f for s in self.steps for f in s.failures]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.key, "file": self.file, "ok": self.ok, "database": self.backend,
                "steps": [s.to_json() for s in self.steps]}


@contextmanager
def isolated_database(url: str | None = None) -> Iterator[Engine]:
    """A migrated, empty database used only by this run, removed afterwards.

    A fresh SQLite file in a temporary folder, or, when ``url`` (default
    ``CARELOOP_DATABASE_URL``) names PostgreSQL, a fresh schema in that database (dropped at the
    end). While the block runs, it is the process's default engine.
    """
    from careloop.engine.migrate import upgrade

    url = url if url is not None else os.environ.get("CARELOOP_DATABASE_URL")
    schema = None
    with tempfile.TemporaryDirectory(prefix="careloop-scenario-") as folder:
        if url and make_url(url).get_backend_name() == "postgresql":
            engine, schema = dbmod.schema_engine(url, "careloop_scenario")
        else:
            engine = dbmod.make_engine(f"sqlite:///{Path(folder) / 'careloop.db'}")
        try:
            upgrade(engine)
            with dbmod.use_engine(engine):
                yield engine
        finally:
            engine.dispose()
            if schema is not None and url:
                dbmod.drop_schema(url, schema)


def bundles_for(app_root: Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """The scenario's app, the ``extra`` apps, and every app they require (transitively), in
    import order.

    Other apps are looked up beside the app (``app_definitions/<id>``).

    Raises:
        BundleError: if an app is not beside it.
    """
    wanted: dict[str, Path] = {}

    def visit(path: Path) -> None:
        app_id, requires = requires_of(path)
        if app_id is None or app_id in wanted:
            return
        wanted[app_id] = path
        for required in requires:
            candidate = path.parent / required
            if not (candidate / "app.yaml").is_file():
                raise BundleError(f"{path}: required app '{required}' is not beside it "
                                  f"({candidate})")
            visit(candidate)

    visit(app_root)
    for app_id in extra:
        candidate = app_root.parent / app_id
        if not (candidate / "app.yaml").is_file():
            raise BundleError(f"app '{app_id}' named in 'apps' is not beside {app_root.name} "
                              f"({candidate})")
        visit(candidate)
    return order_by_requires(list(wanted.values()))


def run_scenario(spec: ScenarioSpec, app_root: Path, *, database_url: str | None = None,
                 observe: Callable[[Engine], None] | None = None) -> ScenarioResult:
    """Run one compiled scenario of the app at ``app_root`` in its own database.

    ``database_url`` ``""`` always uses a SQLite file (``None``: ``CARELOOP_DATABASE_URL``).
    ``observe(engine)`` is called once the steps have run, before the database is removed (the
    builder's simulate reads the patient's timeline there).
    """
    with isolated_database(database_url) as engine:
        result = ScenarioResult(key=spec.key, file=spec.file, backend=engine.dialect.name)
        try:
            for path in bundles_for(app_root, spec.apps):
                with frozen_now(spec.start):
                    import_bundle(path, engine=engine, actor="scenario")
        except (BundleError, DefinitionInvalid) as exc:
            shown = (str(exc) if isinstance(exc, BundleError)
                     else "; ".join(p.render() for p in exc.problems[:3]))
            result.steps.append(StepResult(step=spec.steps[0], at="", failures=[
                Failure(Where(spec.file, 1, 1, "$"), f"the apps could not be imported: {shown}")]))
            return result
        journey = Journey(engine, spec.start)
        for step in spec.steps:
            outcome = _run_step(journey, step)
            result.steps.append(outcome)
            if outcome.failures:
                break  # later steps build on this one; their failures would only echo it
        if observe is not None:
            observe(engine)
        return result


def _run_step(journey: Journey, step: StepSpec) -> StepResult:
    outcome = StepResult(step=step, at="")
    try:
        outcome.done = journey.run(step)
    except StepFailed as exc:
        outcome.failures.append(Failure(step.where, str(exc)))
    outcome.at = journey.clock.astimezone(hospital_tz()).strftime("%Y-%m-%d %H:%M")
    if outcome.failures:
        return outcome
    with frozen_now(journey.clock):
        for expectation in step.expects:
            outcome.checked += 1
            message = journey.check(expectation)
            if message is not None:
                outcome.failures.append(Failure(expectation.where, message))
    return outcome
