"""Kinds and catalogues that belong to the engine itself (shared by every engine)."""

from __future__ import annotations

from dataclasses import dataclass

from careloop.engine.kinds import KindSpec
from careloop.engine.registry import Registry


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A message channel's name and label; the flow engine attaches the sending adapter."""

    name: str
    title: dict[str, str]


CHANNELS = (
    ChannelInfo("sms", {"zh-CN": "短信", "en": "SMS"}),
    ChannelInfo("wechat", {"zh-CN": "微信", "en": "WeChat"}),
    ChannelInfo("wecom", {"zh-CN": "企业微信", "en": "WeCom"}),
    ChannelInfo("email", {"zh-CN": "电子邮件", "en": "E-mail"}),
    ChannelInfo("app", {"zh-CN": "站内消息", "en": "In-app"}),
    ChannelInfo("log", {"zh-CN": "日志（测试）", "en": "Log (testing)"}),
)


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """A staff role; the web runtime maps roles to permissions. ``administrative`` roles (the
    system, security and audit administrators) follow the separation of duties: mutually
    exclusive, no patient data, granted only with a second administrator's approval."""

    name: str
    title: dict[str, str]
    administrative: bool = False


ROLES = (
    RoleInfo("system_admin", {"zh-CN": "系统管理员", "en": "System administrator"},
             administrative=True),
    RoleInfo("security_admin", {"zh-CN": "安全管理员", "en": "Security administrator"},
             administrative=True),
    RoleInfo("auditor", {"zh-CN": "审计员", "en": "Auditor"}, administrative=True),
    RoleInfo("leadership", {"zh-CN": "院领导", "en": "Hospital leadership"}),
    RoleInfo("px_office", {"zh-CN": "患者体验办公室", "en": "Patient-experience office"}),
    RoleInfo("dept_director", {"zh-CN": "科主任", "en": "Department director"}),
    RoleInfo("head_nurse", {"zh-CN": "护士长", "en": "Head nurse"}),
    RoleInfo("doctor", {"zh-CN": "医生", "en": "Doctor"}),
    RoleInfo("nurse", {"zh-CN": "护士", "en": "Nurse"}),
    RoleInfo("followup_agent", {"zh-CN": "随访专员", "en": "Follow-up agent"}),
    RoleInfo("pharmacist", {"zh-CN": "药师", "en": "Pharmacist"}),
    RoleInfo("pharmacy_head", {"zh-CN": "药剂科主任", "en": "Head of pharmacy"}),
)


def register(registry: Registry) -> None:
    from careloop.engine.templates import compile_template

    roles = registry.catalogue("role")
    for role in ROLES:
        roles.register(role.name, role)
    channels = registry.catalogue("channel")
    for info in CHANNELS:
        channels.register(info.name, info)
    registry.catalogue("kind").register("template", KindSpec(
        name="template", package="careloop.engine", schema_file="schema/template.json",
        compile=compile_template, folder="templates",
        title={"zh-CN": "消息模板", "en": "Message template"}, order=10))
