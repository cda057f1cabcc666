"""Registers the flow engine: kinds ``flow``, ``calendar``, ``his_view`` and ``hl7_mapping``,
step types, channel adapters, the ``flows`` event handler, services and CLI commands."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from careloop.engine.hookspecs import hookimpl
from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.flows.calendar import add_working_days, compile_calendar
    from careloop.flows.channels import BUILTIN_CHANNELS
    from careloop.flows.cli import commands
    from careloop.flows.compiler import compile_flow
    from careloop.flows.handlers import handle_event, prefetch
    from careloop.flows.outbox import enqueue
    from careloop.flows.runtime import start
    from careloop.flows.steps import STEP_TYPES

    kinds = registry.catalogue("kind")
    kinds.register("calendar", KindSpec(
        name="calendar", package="careloop.flows", schema_file="schema/calendar.json",
        compile=compile_calendar, folder="calendars",
        title={"zh-CN": "工作日历", "en": "Business calendar"}, order=15))
    from careloop.flows.inbound.hl7_mapping import compile_hl7_mapping

    kinds.register("hl7_mapping", KindSpec(
        name="hl7_mapping", package="careloop.flows", schema_file="schema/hl7_mapping.json",
        compile=compile_hl7_mapping, folder="hl7_mappings",
        title={"zh-CN": "HL7 v2 映射", "en": "HL7 v2 mapping"}, order=16))
    kinds.register("flow", KindSpec(
        name="flow", package="careloop.flows", schema_file="schema/flow.json",
        compile=compile_flow, folder="flows", title={"zh-CN": "流程", "en": "Flow"}, order=50))
    from careloop.flows.inbound.views import compile_his_view, poll_due

    kinds.register("his_view", KindSpec(
        name="his_view", package="careloop.flows", schema_file="schema/his_view.json",
        compile=compile_his_view, folder="his_views",
        title={"zh-CN": "HIS 数据库视图", "en": "HIS database view"}, order=20))
    registry.catalogue("tick").register("his_views.poll", lambda engine: poll_due(engine))
    from careloop.flows.consult import compile_consult_desk

    kinds.register("consult_desk", KindSpec(
        name="consult_desk", package="careloop.flows", schema_file="schema/consult_desk.json",
        compile=compile_consult_desk, folder="consult_desks",
        title={"zh-CN": "在线咨询台", "en": "Consult desk"}, order=40))
    _register_health_manager(registry)
    from careloop.flows.health.packages import compile_checkup_package

    kinds.register("checkup_package", KindSpec(
        name="checkup_package", package="careloop.flows", schema_file="schema/checkup_package.json",
        compile=compile_checkup_package, folder="packages",
        title={"zh-CN": "体检套餐", "en": "Health-check package"}, order=30))
    steps = registry.catalogue("step_type")
    for name, step in STEP_TYPES.items():
        steps.register(name, step)
    from careloop.flows.education import compile_education
    from careloop.flows.education_step import register as register_education

    kinds.register("education", KindSpec(
        name="education", package="careloop.flows", schema_file="schema/education.json",
        compile=compile_education, folder="education",
        title={"zh-CN": "健康宣教", "en": "Health education"}, order=18))
    register_education(registry)  # the send_education step type and its service
    channel_types = registry.catalogue("channel_adapter")  # the Channel contract (channel.py)
    for name, channel in BUILTIN_CHANNELS.items():
        channel_types.register(name, channel)
    from careloop.flows.wechat.channels import register as register_wechat

    register_wechat(registry)  # wechat_mp, wecom_app (flows/wechat/)
    from careloop.flows.sms import sms_channels  # Alibaba Cloud and Tencent Cloud SMS

    for name, channel in sms_channels().items():
        channel_types.register(name, channel)
    registry.catalogue("event_handler").register("flows", handle_event)
    registry.catalogue("event_prefetch").register("flows", prefetch)
    from careloop.engine.services import (
        ADD_WORKING_DAYS,
        FLOWS_START,
        NOTIFY_RESULTS,
        OUTBOX_ENQUEUE,
        register_service,
    )
    from careloop.flows.results import push_notice

    register_service(registry, OUTBOX_ENQUEUE, enqueue)
    register_service(registry, FLOWS_START, start)
    register_service(registry, ADD_WORKING_DAYS, add_working_days)
    register_service(registry, NOTIFY_RESULTS, push_notice)
    from careloop.flows.scheduler import run_due

    registry.catalogue("tick").register("flows.sweep", lambda engine: run_due(engine))
    from careloop.flows.parking import parked_tick

    registry.catalogue("tick").register("integration.parked", parked_tick)
    registry.catalogue("demo_seeder").register("flows", _demo_seeder())
    cli = registry.catalogue("cli")
    for command in commands():
        cli.register(str(command.name), command)


def _demo_seeder() -> object:
    from careloop.flows.demo import seed_flows

    return seed_flows


def _register_health_manager(registry: Registry) -> None:
    """The health manager (健康管理师) who answers a department's patients' questions: the
    clinical permissions (patients, tasks, definitions, reports), like a nurse."""
    from careloop.engine.kinds_builtin import RoleInfo

    registry.catalogue("role").register("health_manager", RoleInfo(
        "health_manager", {"zh-CN": "健康管理师", "en": "Health manager"}))
    registry.catalogue("role_permissions").register("health_manager", frozenset({
        "patient.view", "task.work", "definitions.view", "reports.view"}))


# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.flows.models", "careloop.flows.inbound.models",
            "careloop.flows.wechat.models", "careloop.flows.consult_models",
            "careloop.flows.education_models", "careloop.flows.health.models",
            "careloop.flows.call_models"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.flows:migrations"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.flows:data/i18n"]


@hookimpl
def inbound_event_types() -> list[tuple[str, dict[str, Any]]]:
    """The HIS events the events API accepts, each with its payload schema
    (``flows/schema/events/<type>.json``)."""
    from careloop.flows.ingest import EVENT_TYPES

    folder = resources.files("careloop.flows").joinpath("schema", "events")
    return [(name, json.loads(folder.joinpath(f"{name}.json").read_text("utf-8")))
            for name in EVENT_TYPES]
