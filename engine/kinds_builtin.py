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


def register(registry: Registry) -> None:
    from careloop.engine.templates import compile_template

    channels = registry.catalogue("channel")
    for info in CHANNELS:
        channels.register(info.name, info)
    registry.catalogue("kind").register("template", KindSpec(
        name="template", package="careloop.engine", schema_file="schema/template.json",
        compile=compile_template, folder="templates",
        title={"zh-CN": "消息模板", "en": "Message template"}, order=10))
