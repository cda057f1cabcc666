"""A weighted mean score method in one file: ``Σ wᵢ·xᵢ / Σ wᵢ`` over the answered fields.

Unlike the built-in ``weighted`` (a weighted *sum*), a missing answer does not pull the score
down: the weights of the answered fields are the divisor. Every named field needs a weight.

    scores:
      - {key: burden, method: weighted_mean, fields: [pain, sleep],
         field_weights: {pain: 3, sleep: 1}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careloop.engine.registry import Registry
from careloop.forms.scoring import ScoreInput, ScoreMethod, ScoreProblem
from careloop.forms.spec import ScoreSpec


def compute(score: ScoreSpec, given: ScoreInput) -> float | None:
    weights = score.options["field_weights"]
    total = sum(float(weights[name]) for name, _ in given.given)
    if not given.given or total == 0:
        return None
    return sum(float(weights[name]) * n for name, n in given.given) / total


def check(score: Mapping[str, Any], field_keys: frozenset[str]) -> list[ScoreProblem]:
    """Every field of the score has a weight, and every weight names a field of the score."""
    weights = score.get("field_weights") or {}
    named = list(score.get("fields") or ())
    problems: list[ScoreProblem] = [
        (("field_weights", name), "form.unknown-field-reference",
         f"weight '{name}' names no field of this score") for name in weights if name not in named]
    problems += [(("fields", i), "form.missing-weight", f"field '{name}' has no weight")
                 for i, name in enumerate(named) if name not in weights]
    return problems


WEIGHTED_MEAN = ScoreMethod(
    "weighted_mean", {"zh-CN": "加权平均", "en": "Weighted mean of the answered fields"},
    compute,
    {"field_weights": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                       "x-label": {"zh-CN": "各字段权重", "en": "Weight per field"}}},
    required=("field_weights",), check=check)


def register(registry: Registry) -> None:
    registry.catalogue("score_method").register(WEIGHTED_MEAN.name, WEIGHTED_MEAN)
