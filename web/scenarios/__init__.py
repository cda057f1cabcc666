"""Journey scenarios: the ``scenario`` definition kind and the runner that drives the web app.

A scenario is a hospital journey written as data (``app_definitions/<app>/scenarios/*.yaml``):
HIS events in, time travelled, the patient opening the link that was actually sent and answering
on the real patient page, staff signing in and working their inbox, with expectations after each
step. See docs/scenarios.md.
"""

from __future__ import annotations

from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    """Register the ``scenario`` kind and the ``careloop scenario`` command group."""
    from careloop.web.scenarios import steps
    from careloop.web.scenarios.cli import scenario
    from careloop.web.scenarios.compiler import compile_scenario

    steps.register(registry)
    registry.catalogue("kind").register("scenario", KindSpec(
        name="scenario", package="careloop.web.scenarios", schema_file="schema/scenario.json",
        compile=compile_scenario, folder="scenarios",
        title={"zh-CN": "旅程场景", "en": "Journey scenario"}, order=900))
    registry.catalogue("cli").register("scenario", scenario)
