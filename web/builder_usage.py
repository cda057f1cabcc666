"""Where a definition is used: every current definition that refers to it, found by checking
all current definitions together — each kind's compiler resolves its references through
``CompileContext.reference``, which records them (``CheckResult.uses``), so nothing here knows
which option of which kind names a form, a template or a dictionary.

    used_by(session, "form", "inpatient_satisfaction")
    → [{"kind": "ruleset", "key": "followup_routing", "app": "satisfaction",
        "title": {"zh-CN": "满意度回访分流", …}, "kind_title": {"zh-CN": "规则集", …}}, …]
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.check import DefKey, check_documents
from careloop.engine.registry import loaded_registry
from careloop.engine.sources import load_text

# the references of the current definitions, for the store as it was last seen: checking every
# definition takes seconds, publishing is rare (key: every current (kind, key, content hash))
_seen: dict[str, Any] = {"state": None, "uses": set()}


def _uses(session: Session) -> tuple[dict[DefKey, Any], set[tuple[DefKey, DefKey]]]:
    rows = {(row.kind, row.key): row for row in store.list_current(session)}
    state = sorted((kind, key, row.content_hash) for (kind, key), row in rows.items())
    if _seen["state"] != state:
        docs = [load_text(row.source_text, f"{row.app_id or ''}/{row.source_path}")
                for row in rows.values()]
        _seen.update(state=state, uses=check_documents(docs).uses)
    uses: set[tuple[DefKey, DefKey]] = _seen["uses"]
    return rows, uses


def used_by(session: Session, kind: str, key: str) -> list[dict[str, Any]]:
    """The current definitions that refer to ``kind``/``key``, by kind and title."""
    rows, uses = _uses(session)
    kinds = loaded_registry().catalogue("kind")
    out = []
    for source in sorted({src for src, target in uses
                          if target == (kind, key) and src != (kind, key)}):
        row = rows.get(source)
        if row is None:
            continue
        spec = kinds.get(source[0])
        out.append({"kind": source[0], "key": source[1], "app": row.app_id or "",
                    "title": dict(row.title or {}),
                    "kind_title": dict(spec.title) if spec is not None else {}})
    return out
