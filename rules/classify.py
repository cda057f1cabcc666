"""Text classification with keyword dictionaries (Chinese text segmented with jieba).

A dictionary lists categories, each with keywords and synonyms (``synonyms: {用药指导: [用药说明]}``
maps a synonym onto its keyword), and negation words (不清楚, 不满意, 没有解释…). A keyword with a
negation word within ``window`` tokens of it is recorded as *negated*: the patient talks about the
topic unfavourably (``出院时用药指导不清楚`` → medication_guidance, negated).

    >>> spec = DictionarySpec("d", {}, ("不清楚",), 3, (CategorySpec("medication_guidance", {},
    ...     {"用药指导": "用药指导"}),))
    >>> [(m.category, m.negative, [w["word"] for w in m.words]) for m in spec.classify(
    ...     "出院时用药指导不清楚")]
    [('medication_guidance', True, ['用药指导'])]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jieba  # type: ignore[import-untyped]

_LOCK = threading.Lock()
_ADDED: set[str] = set()


@cache
def _tokenizer() -> jieba.Tokenizer:
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


def segment(text: str, words: Iterable[str] = ()) -> list[str]:
    """Split Chinese text into words, keeping every dictionary word whole."""
    tokenizer = _tokenizer()
    with _LOCK:
        for word in words:
            if word not in _ADDED:
                tokenizer.add_word(word, freq=200_000)
                _ADDED.add(word)
        return [t for t in tokenizer.lcut(text, HMM=False) if t.strip()]


@dataclass(frozen=True, slots=True)
class CategorySpec:
    key: str
    title: Mapping[str, str]
    terms: Mapping[str, str]  # word or synonym -> the keyword it stands for


@dataclass(frozen=True, slots=True)
class CategoryMatch:
    category: str
    negative: bool
    words: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DictionarySpec:
    key: str
    title: Mapping[str, str]
    negations: tuple[str, ...]
    window: int
    categories: tuple[CategorySpec, ...]

    def vocabulary(self) -> list[str]:
        words = list(self.negations)
        for category in self.categories:
            words.extend(category.terms)
        return words

    def classify(self, text: object) -> list[CategoryMatch]:
        """Categories mentioned in ``text`` with the words matched, in dictionary order."""
        if not isinstance(text, str) or not text.strip():
            return []
        tokens = segment(text, self.vocabulary())
        negation_at = [i for i, tok in enumerate(tokens) if tok in self.negations]
        found: list[CategoryMatch] = []
        for category in self.categories:
            words: list[dict[str, Any]] = []
            for i, token in enumerate(tokens):
                term = category.terms.get(token)
                if term is None:
                    continue
                negated = any(abs(i - n) <= self.window for n in negation_at)
                words.append({"word": token, "term": term, "negated": negated})
            if not words:
                # jieba may glue a keyword into a longer word; fall back to plain containment.
                words = [{"word": w, "term": t, "negated": bool(negation_at)}
                         for w, t in category.terms.items() if len(w) >= 2 and w in text]
            if words:
                found.append(CategoryMatch(category.key, any(w["negated"] for w in words), words))
        return found


def summary(matches: Iterable[CategoryMatch]) -> dict[str, Any]:
    """The ``classification`` expression name: categories, negative ones, and words matched."""
    items = list(matches)
    return {"categories": [m.category for m in items],
            "negative": [m.category for m in items if m.negative],
            "words": {m.category: [w["word"] for w in m.words] for m in items}}
