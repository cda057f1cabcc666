"""The ``send_education`` step type and the options it shares with the rule action of the same
name: send the patient the education items that fit the run's encounter.

    - key: diet_article
      type: send_education
      stage: discharge_day1          # which items: those for this stage of care …
      articles: [hypertension_low_salt_diet]   # … optionally only these (in this order)
      limit: 1                       # at most this many (default 1)

An item fits when its ``stages`` name the step's stage, its ``diseases`` (if any) match one of
the encounter's diagnosis codes and its ``audience_departments`` (if any) the encounter's
department. Nothing fitting: the run goes on and its history says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from careloop.engine.registry import Registry
from careloop.engine.services import SEND_EDUCATION, register_service
from careloop.flows.education_send import TEMPLATE, send_education
from careloop.flows.runtime import Exec, Outcome, source_ref
from careloop.flows.step_types import Labels, Options, RetryPolicy, StepType, Text

STAGES = ("pre_admission", "pre_op", "post_op", "inpatient", "discharge", "discharge_day1",
          "discharge_day7", "discharge_day30", "outpatient", "chronic")
# The options of the step and of the rule action (rules/actions.py reads the same schema).
OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "stage": {"enum": list(STAGES), "x-error-code": "education.unknown-stage"},
    "articles": {"type": "array", "minItems": 1, "uniqueItems": True,
                 "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}},
    "limit": {"type": "integer", "minimum": 1, "maximum": 5},
    "channel": {"type": "string", "x-registry": "channel", "x-error-code": "flow.unknown-channel"},
    "template": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
}


class SendEducation(StepType):
    """Send the fitting education items through the patient's channel."""

    name = "send_education"
    icon = "📖"
    title: ClassVar[Text] = {"zh-CN": "推送健康宣教", "en": "Send health education"}
    options: ClassVar[Options] = OPTIONS
    required = ("stage",)
    references = (("articles.*", "education"), ("template", "template"))
    retry = RetryPolicy(attempts=3, backoff="5m")
    labels: ClassVar[Labels] = {
        "stage": {"label": {"zh-CN": "阶段", "en": "Stage"},
                  "help": {"zh-CN": "推送为该阶段编写的宣教内容，例如出院第1天",
                           "en": "send items written for this stage, e.g. day 1 after "
                                 "discharge"}},
        "articles": {"label": {"zh-CN": "限定文章", "en": "Only these items"}},
        "limit": {"label": {"zh-CN": "最多篇数", "en": "At most"}}}
    defaults: ClassVar[Mapping[str, Any]] = {"stage": "discharge_day1"}

    def run(self, x: Exec) -> Outcome:
        if not x.run.patient_id:
            x.history("education_none", {"reason": "no_patient"})
            return ("next", x.step.next)
        sent = send_education(
            x.session, patient_id=x.run.patient_id, encounter_id=x.run.encounter_id,
            stage=x.step.get("stage"), articles=tuple(x.step.get("articles") or ()),
            channel=x.step.get("channel"), template=x.step.get("template") or TEMPLATE,
            limit=int(x.step.get("limit") or 1), idempotency_key=x.key,
            source_ref=source_ref(x.run, x.step.key))
        x.history("education" if sent else "education_none", {"message_ids": sent})
        return ("next", x.step.next)


def _owner(body: Mapping[str, Any]) -> str | None:
    department = body.get("department")
    return str(department) if department else None


def _demo_seeder() -> object:
    from careloop.flows.education_demo import seed_education

    return seed_education


def register(registry: Registry) -> None:
    """The step type and the ``education.send`` service the rule action calls."""
    registry.catalogue("step_type").register(SendEducation.name, SendEducation())
    # an item belongs to its department: a department's editor publishes only their own
    # (web/builder.py require_owner)
    registry.catalogue("definition_owner").register("education", _owner)
    registry.catalogue("demo_seeder").register("education", _demo_seeder())
    register_service(registry, SEND_EDUCATION, send_education)
