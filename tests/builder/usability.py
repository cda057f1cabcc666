"""Scripted usability tasks: a person's actions in the builder, counted, and only the ones a
person without YAML does — clicks, picks and typing labels. Typing into the YAML pane, anything
under a "高级 / Advanced" disclosure (keys, codes, expressions) or a JSON box raises.

``Actions`` drives Playwright (Chromium); ``FirefoxActions`` drives tests/builder/firefox.py.
Each counts one action per click, per field filled and per option picked. ``guard_playwright``
also wraps Playwright's own ``fill`` / ``type`` / ``press_sequentially``, so a test cannot type
into those boxes by going around ``Actions``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .firefox import Firefox

# where a person never types: the YAML pane, the "Advanced" disclosures, expression inputs and
# JSON boxes (the rule editor's sample event)
FORBIDDEN = ("#b-text-advanced, details.b-advanced, [data-advanced], #b-yaml, .b-expression, "
             "#b-sample, textarea.b-json")
_IS_FORBIDDEN = ("n => !!(n.closest(" + json.dumps(FORBIDDEN) + ") || n.matches("
                 + json.dumps(FORBIDDEN) + "))")


class TypedIntoCode(AssertionError):
    """The script typed into YAML, JSON or an expression."""


def _refuse(locator: Locator) -> None:
    if locator.count() and locator.first.evaluate(_IS_FORBIDDEN):
        raise TypedIntoCode(f"typed into a YAML / JSON / expression box: {locator}")


def guard_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every Playwright ``fill`` / ``type`` / ``press_sequentially`` refuse those boxes."""
    for name in ("fill", "type", "press_sequentially"):
        original = getattr(Locator, name)

        def locator_guard(self: Locator, *args: Any, _original: Any = original,
                          **kwargs: Any) -> Any:
            _refuse(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Locator, name, locator_guard)
    for name in ("fill", "type"):
        original = getattr(Page, name)

        def page_guard(self: Page, selector: str, *args: Any, _original: Any = original,
                       **kwargs: Any) -> Any:
            _refuse(self.locator(selector))
            return _original(self, selector, *args, **kwargs)

        monkeypatch.setattr(Page, name, page_guard)


class Actions:
    """A person's actions on a Playwright page, counted."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0
        self.log: list[str] = []

    def _note(self, what: str) -> None:
        self.count += 1
        self.log.append(what)

    def click(self, selector: str, **kw: Any) -> None:
        self.page.locator(selector, **kw).first.click()
        self._note(f"click {selector}")

    def check(self, selector: str) -> None:
        self.page.locator(selector).check()
        self._note(f"check {selector}")

    def pick(self, selector: str, label: str) -> None:
        """Choose an option of a select by the words it shows."""
        box = self.page.locator(selector)
        expect(box.locator("option").filter(has_text=label).first).to_be_attached()
        options = box.locator("option").evaluate_all("os => os.map(o => o.textContent)")
        assert label in options, f"{selector}: no option {label!r} in {options}"
        box.select_option(label=label)
        self._note(f"pick {selector} = {label}")

    def fill(self, selector: str, text: str) -> None:
        """Type into a box (labels, titles, numbers), then Tab: the change commits it."""
        box = self.page.locator(selector)
        box.fill(text)   # guarded: refuses YAML / JSON / expression boxes
        box.press("Tab")
        self._note(f"fill {selector} = {text}")

    def goto(self, url: str) -> None:
        """Follow a link (counted as a click)."""
        self.page.goto(url)
        self._note(f"open {url}")


class FirefoxActions:
    """The same actions in Firefox over WebDriver BiDi (real pointer clicks and key presses)."""

    def __init__(self, ff: Firefox) -> None:
        self.ff = ff
        self.count = 0
        self.log: list[str] = []

    def _note(self, what: str) -> None:
        self.count += 1
        self.log.append(what)

    def _refuse(self, selector: str) -> None:
        if self.ff.js(f"(() => {{ const n = document.querySelector({json.dumps(selector)}); "
                      f"return !!n && ({_IS_FORBIDDEN})(n); }})()"):
            raise TypedIntoCode(f"typed into a YAML / JSON / expression box: {selector}")

    def click(self, selector: str) -> None:
        self.ff.click(selector)
        self._note(f"click {selector}")

    check = click

    def pick(self, selector: str, label: str) -> None:
        """Choose the option showing ``label`` (the native popup is not part of the page)."""
        self.ff.wait(f"[...(document.querySelector({json.dumps(selector)})?.options || [])]"
                     f".some(o => o.textContent === {json.dumps(label)})", timeout=30)
        value = self.ff.js(f"[...document.querySelector({json.dumps(selector)}).options]"
                           f".find(o => o.textContent === {json.dumps(label)}).value")
        self.ff.select(selector, value)
        self._note(f"pick {selector} = {label}")

    def fill(self, selector: str, text: str) -> None:
        """Click into the box, check what has the focus, clear it, type, then Tab."""
        self._refuse(selector)
        self.ff.click(selector)
        focused = "(() => { const n = document.activeElement; return !!n && (" + \
            _IS_FORBIDDEN + ")(n); })()"
        if self.ff.js(focused):
            raise TypedIntoCode(f"the focus is in a YAML / JSON / expression box: {selector}")
        self.ff.js(f"(() => {{ const n = document.querySelector({json.dumps(selector)}); "
                   "n.select && n.select(); return true; })()")
        self.ff.type("\ue003" + text + "\t")  # Backspace clears the selection
        self._note(f"fill {selector} = {text}")

    def goto(self, url: str) -> None:
        self.ff.goto(url)
        self._note(f"open {url}")
