"""Benchmark: evaluations per second of the follow-up routing rule set, against peers.

Every contender decides which of the three rules of ``satisfaction/rules/followup_routing.yaml``
match (dissatisfied / medication guidance / satisfied) for the same contexts, in the same run:

* careloop       — the compiled :class:`RuleSetSpec` (expressions parsed once)
* simpleeval     — ``simple_eval`` re-parsing each condition every time
* rule-engine    — ``rule_engine.Rule`` objects (parsed once)
* json-logic     — ``panzi-json-logic`` rules as JSON
* zen-engine     — a ``collect`` decision table (GoRules, Rust core)
* hand-written   — a plain Python function (the floor)

    python bench/rules.py            # table of evals/s and ratios
    python bench/rules.py --json     # one machine-readable line
    python bench/rules.py --quick    # tiny N (smoke test)

Text classification is done once beforehand (its result is part of every context), so only
condition evaluation is compared. Ratios are against careloop: ``x`` > 1 means slower than it.
Passes are interleaved and timed in CPU time (see :func:`measure`).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RULESET = ROOT / "app_definitions" / "satisfaction" / "rules" / "followup_routing.yaml"
CONDITIONS = {
    "dissatisfied": "answers.overall < 3",
    "medication_guidance": "'medication_guidance' in classification.negative",
    "satisfied": "answers.overall >= 4",
}

Decide = Callable[[Mapping[str, Any]], list[str]]


def contexts(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        negative = ["medication_guidance"] if rng.random() < 0.2 else []
        out.append({"answers": {"overall": rng.randint(1, 5), "nps": rng.randint(0, 10)},
                    "classification": {"categories": list(negative), "negative": negative},
                    "event": {"form": "inpatient_satisfaction"}})
    return out


def careloop_decider() -> Decide:
    from careloop.engine.check import check_documents
    from careloop.engine.sources import load_file

    # The forms and the dictionary it refers to are taken as present, as for a stored version.
    result = check_documents([load_file(RULESET)], external=lambda kind, key: {"stored": True})
    spec = result.specs[("ruleset", "followup_routing")]
    return lambda ctx: [m.rule.key for m in spec.match(ctx)]


def simpleeval_decider() -> Decide:
    from simpleeval import EvalWithCompoundTypes

    def decide(ctx: Mapping[str, Any]) -> list[str]:
        evaluator = EvalWithCompoundTypes(names=dict(ctx))
        return [key for key, text in CONDITIONS.items() if evaluator.eval(text)]

    return decide


def rule_engine_decider() -> Decide:
    import rule_engine

    rules = {"dissatisfied": "answers['overall'] < 3",
             "medication_guidance": "'medication_guidance' in classification['negative']",
             "satisfied": "answers['overall'] >= 4"}
    compiled = {k: rule_engine.Rule(v) for k, v in rules.items()}
    return lambda ctx: [k for k, rule in compiled.items() if rule.matches(ctx)]


def json_logic_decider() -> Decide:
    from json_logic import jsonLogic

    rules = {"dissatisfied": {"<": [{"var": "answers.overall"}, 3]},
             "medication_guidance": {"in": ["medication_guidance",
                                            {"var": "classification.negative"}]},
             "satisfied": {">=": [{"var": "answers.overall"}, 4]}}
    return lambda ctx: [k for k, rule in rules.items() if jsonLogic(rule, ctx)]


def zen_decider() -> Decide:
    import zen

    table = {
        "hitPolicy": "collect",
        "inputs": [{"id": "i1", "name": "Overall", "field": "answers.overall"},
                   {"id": "i2", "name": "Negative", "field": "classification.negative"}],
        "outputs": [{"id": "o1", "name": "Rule", "field": "rule"}],
        "rules": [{"_id": "r1", "i1": "< 3", "i2": "", "o1": '"dissatisfied"'},
                  {"_id": "r2", "i1": "", "i2": 'contains($, "medication_guidance")',
                   "o1": '"medication_guidance"'},
                  {"_id": "r3", "i1": ">= 4", "i2": "", "o1": '"satisfied"'}]}
    position = {"x": 0, "y": 0}
    graph = {"nodes": [{"id": "in", "type": "inputNode", "name": "In", "position": position},
                       {"id": "dt", "type": "decisionTableNode", "name": "routing",
                        "position": position, "content": table},
                       {"id": "out", "type": "outputNode", "name": "Out", "position": position}],
             "edges": [{"id": "e1", "sourceId": "in", "targetId": "dt", "type": "edge"},
                       {"id": "e2", "sourceId": "dt", "targetId": "out", "type": "edge"}]}
    decision = zen.ZenEngine().create_decision(json.dumps(graph))
    order = list(CONDITIONS)

    def decide(ctx: Mapping[str, Any]) -> list[str]:
        found = {row["rule"] for row in decision.evaluate(dict(ctx))["result"]}
        return [k for k in order if k in found]

    return decide


FORMS = ("inpatient_satisfaction", "outpatient_satisfaction")


def hand_written(ctx: Mapping[str, Any]) -> list[str]:
    """The rule set written by hand, filter included (what a developer would ship)."""
    if ctx["event"].get("form") not in FORMS:
        return []
    overall = ctx["answers"].get("overall")
    out = []
    if overall is not None and overall < 3:
        out.append("dissatisfied")
    if "medication_guidance" in ctx["classification"]["negative"]:
        out.append("medication_guidance")
    if overall is not None and overall >= 4:
        out.append("satisfied")
    return out


CONTENDERS: dict[str, Callable[[], Decide]] = {
    "careloop": careloop_decider,
    "simpleeval (re-parse)": simpleeval_decider,
    "rule-engine": rule_engine_decider,
    "json-logic": json_logic_decider,
    "zen-engine (table)": zen_decider,
    "hand-written": lambda: hand_written,
}


def measure(deciders: Mapping[str, Decide], data: list[dict[str, Any]],
            repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` evaluations per second of each decider over ``data``.

    The passes are interleaved (one pass of every contender per round) and timed in CPU time of
    this process (``time.process_time``): on a shared machine the other processes' load neither
    counts as this process's time nor falls on one contender's passes only, so the ratios of one
    run are comparable (the pass is one thread of pure Python: CPU time is its wall time on an
    idle machine)."""
    best = dict.fromkeys(deciders, float("inf"))
    for _ in range(repeat):
        for name, decide in deciders.items():
            start = time.process_time()
            for ctx in data:
                decide(ctx)
            best[name] = min(best[name], time.process_time() - start)
    return {name: len(data) / t if t > 0 else float("inf") for name, t in best.items()}


def run(n: int, repeat: int) -> dict[str, Any]:
    data = contexts(n)
    expected = [hand_written(c) for c in data]
    deciders: dict[str, Decide] = {}
    for name, factory in CONTENDERS.items():
        try:
            decide = factory()
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        got = [decide(c) for c in data]
        if got != expected:
            raise SystemExit(f"{name} disagrees with the hand-written function")
        deciders[name] = decide
    results = measure(deciders, data, repeat)
    base = results["careloop"]
    return {"bench": "rules", "n": n, "repeat": repeat, "python": platform.python_version(),
            "timer": "process_time, passes interleaved",
            "evals_per_s": {k: round(v) for k, v in results.items()},
            "careloop_speedup": {k: round(base / v, 2) for k, v in results.items()},
            # how many times the hand-written function's time careloop takes (target <= 3)
            "careloop_vs_hand": round(results["hand-written"] / base, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--quick", action="store_true", help="tiny N (smoke test)")
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args(argv)
    n, repeat = (50, 1) if args.quick else (args.n, 3)
    report = run(n, repeat)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return
    print(f"rules bench: {n} contexts, best of {repeat}, Python {report['python']}")
    print(f"{'contender':<24}{'evals/s':>12}  careloop is")
    for name, rate in report["evals_per_s"].items():
        speedup = report["careloop_speedup"][name]
        print(f"{name:<24}{rate:>12,}  {speedup:>6.2f}x as fast")
    print(f"careloop takes {report['careloop_vs_hand']:.2f}x the hand-written function's time")


if __name__ == "__main__":
    main()
