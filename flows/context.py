"""The expression names of a flow run: what the run holds, handed to the one builder.

A run keeps the answers that resumed it (``_last_answers``), the reading (``_reading``) and the
event that started it (``_event``) in its context; :func:`careloop.engine.context.build` turns
those and the run's patient and encounter into the same names forms and rules see.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import context as names


def build(session: Session, *, patient_id: str | None, encounter_id: str | None,
          context: dict[str, Any], event: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything an expression in a flow may read (``event`` defaults to the starting one)."""
    last = context.get("_last_answers") or {}
    return names.build(session, patient_id=patient_id, encounter_id=encounter_id,
                       event=event if event is not None else context.get("_event"),
                       answers=last.get("answers"), scores=last.get("scores"),
                       bands=last.get("bands"), reading=context.get("_reading"),
                       context=context)
