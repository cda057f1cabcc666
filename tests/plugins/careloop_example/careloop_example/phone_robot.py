"""Example step type: a phone-robot call (issue 17). One file, no edit to any core module.

The step asks an outside robot service to call the patient with a ``script`` and waits; the
service reports back with a ``phone_robot.completed`` event at ``POST /api/v1/events``
(``{"patient_id", "call_id", "result": "answered" | "no_answer" | "refused"}``). ``no_answer``
continues at ``on_no_answer`` (say, a nurse's call task), anything else at ``next``; the result is
kept in the run's context as ``<step key>_result``. While the service is not configured
(``CARELOOP_PHONE_ROBOT_URL``) the step fails and its own retry policy applies: 4 attempts from
10 minutes. Only the patient id and the call id leave Careloop; the robot service holds the
phone numbers it dials.

    - key: robot
      type: phone_robot
      script: postop_day3
      max_attempts: 2
      on_no_answer: nurse_call
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from careloop.engine.registry import Registry
from careloop.flows import webhooks
from careloop.flows.runtime import Exec, Outcome, StepError, after
from careloop.flows.step_types import (
    NEXT,
    Edge,
    Labels,
    Options,
    Resume,
    RetryPolicy,
    StepType,
    Text,
)

NAME = "phone_robot"
COMPLETED = "phone_robot.completed"
URL_ENV = "CARELOOP_PHONE_ROBOT_URL"
RESULTS = ("answered", "no_answer", "refused")


class PhoneRobot(StepType):
    """Call the patient through an outside phone robot and wait for its result."""

    name = NAME
    title: ClassVar[Text] = {"zh-CN": "机器人电话", "en": "Phone-robot call"}
    options: ClassVar[Options] = {
        "script": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 5},
        "timeout": {"$ref": "#/$defs/duration"},
        "on_no_answer": {"type": "string"},
    }
    required = ("script",)
    edges = (NEXT, Edge("on_no_answer", {"zh-CN": "未接通", "en": "no answer"}))
    pauses = True
    retry = RetryPolicy(attempts=4, backoff="10m")
    timers = ("timeout",)
    icon = "☎"
    resumes = (Resume(COMPLETED, payload_schema={
        "type": "object", "required": ["patient_id", "call_id", "result"],
        "properties": {"patient_id": {"type": "string", "minLength": 1},
                       "call_id": {"type": "string", "minLength": 1},
                       "result": {"enum": list(RESULTS)}},
        "additionalProperties": False},
        description={"zh-CN": "机器人电话结束", "en": "the robot's call ended"}),)
    labels: ClassVar[Labels] = {
        "script": {"label": {"zh-CN": "话术脚本", "en": "Script"},
                   "help": {"zh-CN": "机器人服务中的脚本名",
                            "en": "the script's name in the robot service"}},
        "max_attempts": {"label": {"zh-CN": "最多拨打次数", "en": "Call attempts"}},
        "timeout": {"label": {"zh-CN": "最长等待", "en": "Give up after"}},
        "on_no_answer": {"label": {"zh-CN": "未接通时", "en": "When nobody answers"}},
    }

    def run(self, x: Exec) -> Outcome:
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            raise StepError("the phone robot service is not configured")
        call_id = f"{x.run.id}.{x.step_run.id}"
        webhooks.enqueue(x.session, idempotency_key=x.key, method="POST", url=url,
                         body={"call_id": call_id, "patient_id": x.run.patient_id,
                               "script": x.step.get("script"),
                               "max_attempts": int(x.step.get("max_attempts", 3))},
                         run_id=x.run.id, step_run_id=x.step_run.id, step_key=x.step.key,
                         flow_key=x.spec.key)
        x.step_run.status, x.step_run.waiting_for = "waiting", COMPLETED
        x.step_run.state = {"call_id": call_id}
        if x.step.get("timeout"):
            x.timer("timeout", after(x.step.get("timeout")))
        x.history("phone_robot_called", {"call_id": call_id})
        return ("wait", None)

    def accepts(self, x: Exec, event: str, payload: Mapping[str, Any]) -> bool:
        return payload.get("call_id") == x.step_run.state.get("call_id")

    def on_event(self, x: Exec, event: str,
                 payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        result = payload.get("result")
        target = (x.step.get("on_no_answer", x.step.next) if result == "no_answer"
                  else x.step.next)
        return target, {f"{x.step.key}_result": result}


def register(registry: Registry) -> None:
    steps = registry.catalogue("step_type")
    if NAME not in steps:
        steps.register(NAME, PhoneRobot())
