"""The instrument corpus tally: the FHIR and REDCap corpus tests record each file's outcome;
tests/forms/conftest.py prints one combined line at the end of the run (and fails the run on
a silent loss, which the recording test has already failed on)."""

from __future__ import annotations

from typing import Literal

Outcome = Literal["whole", "refused loudly", "silent loss"]
#: (corpus, file) → outcome, for the corpus tests that ran in this session
TALLY: dict[tuple[str, str], Outcome] = {}


def record(corpus: str, name: str, outcome: Outcome) -> None:
    """One file's outcome; a file seen twice keeps its worst outcome."""
    order = ("whole", "refused loudly", "silent loss")
    previous = TALLY.get((corpus, name), "whole")
    TALLY[(corpus, name)] = max(previous, outcome, key=order.index)


def silent_losses() -> list[str]:
    return [f"{corpus}:{name}" for (corpus, name), o in sorted(TALLY.items())
            if o == "silent loss"]


def summary() -> str | None:
    """``instrument corpus: 71 files (fhir 46, redcap 25) — 50 whole, 21 refused loudly,
    0 silent losses; pass rate for what is claimed supported: 100 %``."""
    if not TALLY:
        return None
    outcomes = list(TALLY.values())
    whole, refused = outcomes.count("whole"), outcomes.count("refused loudly")
    lost = outcomes.count("silent loss")
    corpora: dict[str, int] = {}
    for corpus, _name in TALLY:
        corpora[corpus] = corpora.get(corpus, 0) + 1
    by_corpus = ", ".join(f"{c} {n}" for c, n in sorted(corpora.items()))
    rate = 100 * (whole + refused) // len(outcomes)
    return (f"instrument corpus: {len(outcomes)} files ({by_corpus}) — {whole} whole, "
            f"{refused} refused loudly, {lost} silent losses; pass rate for what is claimed "
            f"supported: {rate} %")
