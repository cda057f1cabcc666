"""The builder in headless Chromium (Debian's /usr/bin/chromium through Playwright): build the
postpartum day-42 form from nothing, break a condition and undo it, publish, answer it through the
patient link; edit a rule's condition and try it. Fails (never skips) without Chromium."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import Engine, select

from careloop.engine import store
from careloop.engine.bundles import export_bundle, import_bundle
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.registry import loaded_registry
from careloop.forms.models import Submission

from .conftest import ARGS, CHROMIUM, ROOT, make_user, open_advanced, signed_in

KEY = "postpartum_day42"


def _set(page: Page, selector: str, value: str) -> None:
    box = page.locator(selector)
    box.fill(value)
    box.press("Tab")  # the change event commits the edit


def _add(page: Page, field_type: str, key: str) -> None:
    page.locator(f'#b-palette button[data-type="{field_type}"]').click()
    open_advanced(page, '#b-props [data-advanced="field:key"]')   # the key: advanced only
    _set(page, '#b-props [data-prop="key"]', key)
    expect(page.locator(f'#b-fields li[data-key="{key}"]')).to_be_visible()


def _clean(page: Page) -> None:
    expect(page.locator("#b-problems li.ok")).to_be_visible()


def test_build_publish_answer_and_try_a_rule(server: str, engine: Engine,
                                             tmp_path: Path) -> None:
    make_user("px_a", "px_office")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, server, "px_a")
            page.select_option("#new-app", "obstetrics")
            # asked for a title, not a key: the key is proposed, shown only under "高级"
            expect(page.locator("#new-key")).to_be_hidden()
            page.fill("#new-title-zh", "产后42天随访")
            page.locator("#new-title-en").press_sequentially("Postpartum day42")
            page.locator("#new-key-advanced summary").click()
            expect(page.locator("#new-key")).to_have_value(KEY)
            page.click("#new-open")
            page.wait_for_url(f"{server}/builder/edit/form/{KEY}?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            # every registered field type is in the palette
            assert page.locator("#b-palette button").count() == \
                len(loaded_registry().catalogue("field_type").names())

            _add(page, "yes_no", "lochia_normal")
            page.locator('#b-props [data-prop="required"]').check()
            _add(page, "single_choice", "breastfeeding")
            open_advanced(page, '#b-props [data-advanced="choices:choices"]')   # codes
            _set(page, '[data-choice="0.code"]', "exclusive")
            _set(page, '[data-choice="0.zh"]', "纯母乳喂养")
            _set(page, '[data-choice="1.code"]', "formula")
            _set(page, '[data-choice="1.zh"]', "人工喂养")
            page.locator(".b-add-choice").click()
            _set(page, '[data-choice="2.code"]', "mixed")
            _add(page, "rating", "mood")
            _set(page, '#b-props [data-prop="max"]', "5")   # property from the JSON Schema
            _add(page, "multiple_choice", "problems")
            _add(page, "date", "visit_date")
            # drag and drop from the palette
            page.drag_and_drop('#b-palette button[data-type="long_text"]', "#b-fields")
            expect(page.locator('#b-fields li[data-key="long_text_1"]')).to_be_visible()
            _set(page, '#b-props [data-prop="key"]', "comment")
            def keys() -> list[str]:
                found: list[str] = page.locator("#b-fields li.b-card").evaluate_all(
                    "cards => cards.map(c => c.dataset.key)")
                return found

            assert len(keys()) == 6
            while keys()[-1] != "comment":  # move down with the keyboard (Alt+↓)
                page.locator('#b-fields li[data-key="comment"]').press("Alt+ArrowDown")
            # move "visit_date" up above "problems" with the button
            page.locator('#b-fields li[data-key="visit_date"] .b-up').click()
            assert keys() == ["lochia_normal", "breastfeeding", "mood", "visit_date", "problems",
                            "comment"]
            # show "comment" when lochia is not normal, built by picking
            page.locator('#b-fields li[data-key="comment"]').click()
            page.select_option('[data-logic="visible_if.field"]', "lochia_normal")
            page.select_option('[data-logic="visible_if.op"]', "==")
            page.select_option('[data-logic="visible_if.value"]', "no")   # the yes/no answers
            page.click('[data-logic="visible_if.set"]')
            expect(page.locator('#b-fields li[data-key="comment"] .b-logic')) \
                .to_contain_text("是 「否」")
            open_advanced(page, '#b-props [data-advanced="field:comment:visible_if:expression"]')
            expect(page.locator('[data-logic="visible_if.expression"]')).to_have_value(
                "answers.lochia_normal == 'no'")
            # a score
            page.click("#b-add-score")
            open_advanced(page, '[data-advanced="score:0"]')
            _set(page, '[data-score="0.key"]', "mood_score")
            page.select_option('[data-score="0.method"]', "sum")
            page.locator('[data-score="0.fields.lochia_normal"]').uncheck()
            page.locator('[data-score="0.fields.mood"]').check()
            page.locator(".b-add-band").click()
            _set(page, '[data-band="0.0.code"]', "low")
            _set(page, '[data-band="0.0.max"]', "2")
            _clean(page)
            # the live preview is the real patient page in a phone-sized frame
            expect(page.locator("#b-phone #f-lochia_normal")).to_be_visible()
            # … running the same logic: "comment" shows only when lochia is not normal
            expect(page.locator("#b-phone #f-comment")).to_be_hidden()
            page.locator("#b-phone #f-lochia_normal label.choice", has_text="否").click()
            expect(page.locator("#b-phone #f-comment")).to_be_visible()
            page.locator("#b-phone #f-lochia_normal label.choice", has_text="是").click()
            expect(page.locator("#b-phone #f-comment")).to_be_hidden()

            # an error at the field: a condition on a field that does not exist; then undo
            page.locator('#b-fields li[data-key="comment"]').click()
            _set(page, '[data-logic="visible_if.expression"]', "answers.nope == 'no'")
            card = page.locator('#b-fields li[data-key="comment"]')
            expect(card).to_have_class("b-card selected has-error")
            expect(card.locator(".b-err")).to_have_attribute(
                "data-code", "form.unknown-field-reference")
            page.click("#b-undo")
            expect(card).not_to_have_class("b-card selected has-error")
            _clean(page)
            page.click("#b-redo")
            expect(card.locator(".b-err")).to_be_visible()
            page.click("#b-undo")
            _clean(page)

            # the YAML view edits the same definition
            open_advanced(page, "#b-text-advanced")
            yaml_text = page.locator("#b-yaml").input_value()
            assert "visible_if: answers.lochia_normal == 'no'" in yaml_text
            assert "title:\n  zh-CN: 产后42天随访" in yaml_text    # the title typed at home
            page.locator("#b-yaml").fill(yaml_text)
            page.click("#b-apply-text")
            _clean(page)

            # the draft survives a reload
            page.wait_for_timeout(400)
            page.reload()
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            expect(page.locator("#b-fields li.b-card")).to_have_count(6)
            open_advanced(page, "#b-text-advanced")
            assert "zh-CN: 产后42天随访" in page.locator("#b-yaml").input_value()

            # publish: the diff first, then confirm
            page.click("#b-publish")
            expect(page.locator("#b-changes li")).to_have_text("新建「产后42天随访」")
            open_advanced(page, "#b-diff-advanced")
            expect(page.locator("#b-diff")).to_contain_text("+key: postpartum_day42")
            page.click("#b-confirm")
            expect(page.locator("#b-status")).to_contain_text("1")
            expect(page.locator("#b-version")).to_have_text("v1")

            # the patient link
            create = loaded_registry().catalogue("service")["forms.create_request"]
            with transaction(engine) as session:
                made = create(session, form_key=KEY, patient_id="p1", channel="wechat",
                              expires_at=now_utc() + timedelta(days=7))
            patient = browser.new_page(locale="zh-CN", viewport={"width": 390, "height": 844})
            patient.goto(server + str(made["url"]))
            patient.locator("#f-lochia_normal label.choice", has_text="否").click()
            patient.locator("#f-mood label.pill", has_text="2").click()
            patient.locator("#f-comment textarea").fill("恶露未净")
            patient.locator("button[value=submit]").click()
            expect(patient.locator("main")).not_to_contain_text("lochia_normal")
            with transaction(engine) as session:
                sub = session.scalars(select(Submission).where(
                    Submission.form_key == KEY)).one()
                assert sub.answers["lochia_normal"] == "no"
                assert sub.answers["comment"] == "恶露未净"
                assert sub.scores["mood_score"] == 2 and sub.bands["mood_score"] == "low"

            # removing an answered field: the publish dialog names it by its label; the key
            # only under "高级"; then cancelled and undone
            label = page.locator('#b-fields li[data-key="comment"] .b-name').first.inner_text()
            assert label.strip() not in ("", "comment")
            page.locator('#b-fields li[data-key="comment"] .b-remove').click()
            page.click("#b-publish")
            orphan = page.locator('#b-orphan-list li[data-field="comment"]')
            expect(orphan).to_have_text(f"「{label.strip()}」：1 份已存答案")
            expect(page.locator("#b-orphan-keys")).to_be_hidden()
            open_advanced(page, '[data-advanced="publish:orphan-keys"]')
            expect(page.locator("#b-orphan-keys li")).to_have_text(f"「{label.strip()}」：comment")
            page.click("#b-cancel")
            page.click("#b-undo")
            expect(page.locator('#b-fields li[data-key="comment"]')).to_be_visible()

            # a two-step follow-up flow: wait 3 days, send that form; the timeline shows it
            page.goto(f"{server}/builder/edit/flow/postpartum_followup?app=obstetrics")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            page.click('#b-step-palette button[data-type="wait"]')
            _set(page, '#b-step-props [data-prop="duration"]', "3")     # 3 天
            page.click('#b-step-palette button[data-type="send_form"]')
            page.select_option('#b-step-props [data-prop="form"]', KEY)
            page.select_option('#b-step-props [data-prop="template"]', "survey_invitation")
            page.check('#b-step-props [data-prop="channels.wechat"]')
            _clean(page)
            expect(page.locator('#b-timeline li[data-step="send_form_1"]')).to_contain_text(
                "第 3 天")
            page.click("#b-publish")
            page.click("#b-confirm")
            expect(page.locator("#b-version")).to_have_text("v1")

            # a dashboard tile's chart: dataset, dimension, measure, chart type → the chart
            page.goto(f"{server}/builder/edit/chart/nps_tile?app=satisfaction")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            page.select_option("#b-chart-dataset", "satisfaction_by_department")
            page.select_option("#b-chart-type", "bar")
            page.select_option('[data-channel="x"]', "department")
            page.select_option('[data-channel="y"]', "nps")
            _clean(page)
            # no submissions yet: the preview says so and draws nothing (never sample data)
            expect(page.locator("#b-chart-note")).to_contain_text("暂无数据")
            expect(page.locator("#b-chart-image")).to_be_hidden()
            page.click("#b-publish")
            page.click("#b-confirm")
            expect(page.locator("#b-version")).to_have_text("v1")
            # … and add it as a tile of a new dashboard: the tile shows its chart
            page.goto(f"{server}/builder/edit/dashboard/builder_overview?app=satisfaction")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            page.select_option("#b-tile-chart", "nps_tile")
            page.click("#b-add-tile")
            # no submissions yet: the tile says so instead of drawing sample data
            tile = page.locator('#b-tiles li[data-chart="nps_tile"]')
            expect(tile.locator(".b-empty")).to_contain_text("暂无数据")
            expect(tile.locator("img")).to_have_count(0)
            _clean(page)
            page.click("#b-publish")
            page.click("#b-confirm")
            expect(page.locator("#b-version")).to_have_text("v1")

            # the rule editor: edit a condition and try it against a sample submission
            page.goto(f"{server}/builder/edit/ruleset/followup_routing?app=satisfaction")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            open_advanced(page, "#b-sample-advanced")
            page.fill("#b-sample", '{"form": "inpatient_satisfaction", "answers": '
                                   '{"overall": 3, "nps": 9}}')
            page.click("#b-try")
            expect(page.locator('#b-try-list li[data-rule="dissatisfied"]')) \
                .to_have_class("b-try-miss")
            page.select_option('[data-rule="0.field"]', "overall")  # built by picking
            page.select_option('[data-rule="0.op"]', "<=")
            page.fill('[data-rule="0.value"]', "3")
            page.click('[data-rule="0.set"]')
            expect(page.locator('[data-rule="0.sentence"]')).to_have_text(
                "当 您对本次住院的总体满意度如何？ ≤ 3")
            open_advanced(page, '[data-advanced="rule:dissatisfied:expression"]')
            expect(page.locator('[data-rule="0.expression"]')).to_have_value(
                "answers.overall <= 3")
            _clean(page)
            page.click("#b-try")
            expect(page.locator('#b-try-list li[data-rule="dissatisfied"]')) \
                .to_have_class("b-try-hit")
            open_advanced(page, '[data-advanced="try:actions"]')
            expect(page.locator("#b-try-actions")).to_contain_text("create_task")
            # a decision table edited as a grid
            page.goto(f"{server}/builder/edit/decision_table/followup_plan?app=common")
            expect(page.locator("#builder[data-ready='1']")).to_be_attached()
            _set(page, '[data-cell="4.then.first_call_days"]', "5")
            _clean(page)
            page.click("#b-add-row")
            # a column whose values have words is picked by them (普通科室, 普通出院随访)
            page.select_option('[data-cell="6.when.department"]', label="普通科室")
            page.select_option('[data-cell="6.then.plan"]', label="普通出院随访")
            expect(page.locator("#b-problems li").first).to_have_attribute(
                "data-code", "rules.overlapping-rows")
            expect(page.locator('#b-grid tr[data-row="6"]')).to_have_class("has-error")
            page.click("#b-undo")
            page.click("#b-undo")
            page.click("#b-undo")
            _clean(page)
            open_advanced(page, "#b-text-advanced")
            assert "first_call_days: 5" in page.locator("#b-yaml").input_value()
            assert errors == []
        finally:
            browser.close()

    # what the builder produced validates with `careloop validate` and re-imports unchanged
    with transaction(engine) as session:
        assert store.current(session, "form", KEY).version == 1  # type: ignore[union-attr]
        flow = store.current(session, "flow", "postpartum_followup")
        assert flow is not None and flow.app_id == "obstetrics"
        assert [s["type"] for s in flow.body["steps"]] == ["wait", "send_form"]
        dashboard = store.current(session, "dashboard", "builder_overview")
        assert dashboard is not None and dashboard.body["tiles"] == [
            {"chart": "nps_tile", "width": 6}]
    zip_path = tmp_path / "obstetrics.zip"
    zip_path.write_bytes(export_bundle("obstetrics", engine))
    assert import_bundle(zip_path, dry_run=True, engine=engine).is_noop
    zipfile.ZipFile(zip_path).extractall(tmp_path / "apps" / "obstetrics")
    import shutil

    shutil.copytree(ROOT / "app_definitions" / "common", tmp_path / "apps" / "common")
    result = subprocess.run([str(Path(sys.executable).parent / "careloop"), "validate",
                             str(tmp_path / "apps")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
