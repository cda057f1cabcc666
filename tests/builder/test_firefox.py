"""The builder in Firefox (Debian's firefox-esr, headless, driven over WebDriver BiDi — see
firefox.py): sign in, build a form with real clicks and typing (palette, key, a "show when"
typed with completion), see the live preview, flag an error at the field and undo it, publish;
draw a flow step in the diagram; add a dashboard tile and see its chart. No console errors.
Fails (never skips) without Firefox."""

from __future__ import annotations

import json

from sqlalchemy import Engine

from careloop.engine import store
from careloop.engine.db import transaction

from .conftest import PASSWORD, make_user
from .firefox import Firefox, firefox

KEY = "ff_day42"


def _ready(ff: Firefox) -> None:
    ff.wait("!!document.querySelector(\"#builder[data-ready='1']\")")


def _clean(ff: Firefox) -> None:
    ff.wait("!!document.querySelector('#b-problems li.ok')")


def _card(key: str) -> str:
    return f'#b-fields li[data-key="{key}"]'


def test_the_builder_in_firefox(server: str, engine: Engine) -> None:
    make_user("px_ff", "px_office")
    with firefox() as ff:
        ff.goto(f"{server}/login?next=/builder")
        ff.fill("#username", "px_ff")
        ff.click("#password")
        ff.type(PASSWORD)
        ff.click("#login-submit")
        ff.wait("location.pathname === '/builder'")

        ff.goto(f"{server}/builder/edit/form/{KEY}?app=obstetrics")
        _ready(ff)
        ff.click('#b-palette button[data-type="yes_no"]')
        ff.js("document.querySelector('#b-props [data-advanced=\"field:key\"]').open = true")
        ff.fill('#b-props [data-prop="key"]', "lochia_normal")
        ff.wait(f"!!document.querySelector({json.dumps(_card('lochia_normal'))})")
        ff.click('#b-palette button[data-type="long_text"]')
        ff.fill('#b-props [data-prop="key"]', "comment")
        ff.wait(f"!!document.querySelector({json.dumps(_card('comment'))})")
        # "show when", typed with completion (the expression: under "Advanced"):
        # "answers.lo" + Enter completes the key
        ff.js("document.querySelector('[data-advanced=\"field:comment:visible_if:expression\"]')"
              ".open = true")
        ff.click('[data-logic="visible_if.expression"]')
        ff.type("answers.lo")
        ff.wait("[...document.querySelectorAll('ul.b-complete li')].some(li => "
                "!li.closest('ul').hidden && li.dataset.value === 'answers.lochia_normal')")
        ff.type("\n == 'no'\t")
        # the card reads the condition as a sentence (this browser reads English)
        ff.wait(f"(document.querySelector({json.dumps(_card('comment') + ' .b-logic')}) "
                "|| {}).textContent?.includes('is “No”')")
        _clean(ff)
        # the live preview (a shadow root) shows the patient page running the same logic
        ff.wait("!!document.querySelector('#b-phone').shadowRoot?.querySelector("
                "'#f-lochia_normal')")
        ff.wait("(() => { const n = document.querySelector('#b-phone').shadowRoot"
                "?.querySelector('#f-comment'); "
                "return !!n && (n.hidden || getComputedStyle(n).display === 'none'); })()")
        # an error at the field, then undo
        ff.click(_card("comment"))
        ff.fill('[data-logic="visible_if.expression"]', "answers.nope == 'no'")
        ff.wait(f"document.querySelector({json.dumps(_card('comment'))})"
                ".classList.contains('has-error')")
        code = ff.js(
            f"document.querySelector({json.dumps(_card('comment') + ' .b-err')}).dataset.code")
        assert code == "form.unknown-field-reference"
        ff.click("#b-undo")
        _clean(ff)
        assert not ff.js(f"document.querySelector({json.dumps(_card('comment'))})"
                         ".classList.contains('has-error')")
        ff.click("#b-publish")
        ff.wait("document.querySelector('#b-publish-dialog').open")
        ff.click("#b-confirm")
        ff.wait("document.querySelector('#b-version').textContent === 'v1'")

        # the flow diagram draws a box for a step added through it
        ff.goto(f"{server}/builder/edit/flow/ff_flow?app=obstetrics")
        _ready(ff)
        ff.select("#b-diagram-type", "wait")
        ff.click("#b-diagram-add")
        ff.wait("document.querySelector('#b-diagram-svg g.fd-node[data-key=\"wait_1\"] rect')"
                "?.getBBox().height > 0")

        # a dashboard tile shows its chart
        ff.goto(f"{server}/builder/edit/dashboard/ff_board?app=satisfaction")
        _ready(ff)
        ff.select("#b-tile-chart", "kpi_nps")
        ff.click("#b-add-tile")
        ff.wait("(document.querySelector('#b-tiles li[data-chart=\"kpi_nps\"] img')?.src || '')"
                ".startsWith('data:image/svg')")
        ff.wait("document.querySelector('#b-tiles li[data-chart=\"kpi_nps\"] img')"
                ".naturalWidth > 0")
        assert ff.errors == []

    with transaction(engine) as session:
        form = store.current(session, "form", KEY)
        assert form is not None and form.version == 1
        assert form.body["fields"][1]["visible_if"] == "answers.lochia_normal == 'no'"
