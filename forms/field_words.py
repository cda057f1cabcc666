"""The built-in field types' options in words, for the builder's property panel: each option
schema gets an ``x-label`` (and enum values ``x-enum-labels``) unless its type names its own —
a plugin's type does, with ``x-label`` in its schema.

    >>> worded({"display": {"enum": ["radio", "other"]}})["display"]["x-enum-labels"]
    {'radio': {'zh-CN': '单选按钮', 'en': 'Radio buttons'}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _t(zh: str, en: str) -> dict[str, str]:
    return {"zh-CN": zh, "en": en}


# The built-in field types' options in words (the builder's property panel; a plugin's type
# names its own options with ``x-label``).
OPTION_WORDS = {
    "max_length": _t("最多字数", "Maximum length"), "pattern": _t("格式（正则）", "Pattern"),
    "placeholder": _t("提示文字", "Placeholder"), "min": _t("最小值", "Minimum"),
    "max": _t("最大值", "Maximum"), "unit": _t("单位", "Unit"), "units": _t("可选单位", "Units"),
    "step": _t("步长", "Step"), "min_label": _t("最低端文字", "Label at the low end"),
    "max_label": _t("最高端文字", "Label at the high end"), "display": _t("显示方式", "Display"),
    "min_selected": _t("至少选几项", "Select at least"),
    "max_selected": _t("最多选几项", "Select at most"),
    "all_rows_required": _t("每行都必答", "Every row required"),
    "rank_all": _t("须全部排序", "Rank every item"),
    "accept": _t("允许的文件类型", "Accepted files"),
    "max_size_kb": _t("文件大小上限（KB）", "Maximum size (KB)"),
    "markdown": _t("说明内容", "Text"), "min_items": _t("至少几组", "At least (items)"),
    "max_items": _t("最多几组", "At most (items)"), "statement": _t("同意声明", "Statement"),
}
ENUM_WORDS = {"radio": _t("单选按钮", "Radio buttons"), "dropdown": _t("下拉框", "Drop-down"),
              "buttons": _t("按钮", "Buttons")}


def worded(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options' schemas, each named in words for the builder's panel: its own ``x-label``,
    else the built-in option's words (``OPTION_WORDS``); enum values likewise
    (``x-enum-labels``)."""
    out: dict[str, Any] = {}
    for name, schema in options.items():
        schema = dict(schema)
        if "x-label" not in schema and name in OPTION_WORDS:
            schema["x-label"] = OPTION_WORDS[name]
        if isinstance(schema.get("enum"), list) and "x-enum-labels" not in schema:
            known = {str(v): ENUM_WORDS[str(v)] for v in schema["enum"] if str(v) in ENUM_WORDS}
            if known:
                schema["x-enum-labels"] = known
        out[name] = schema
    return out
