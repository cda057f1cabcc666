"""A plugin's own route, template and translations (``careloop_example/robot_pages.py``): with
the plugin loaded the web app serves its page, rendered in the web app's layout, in Chinese
first and in English, the plugin's catalogue merged with the core's."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from careloop.engine.i18n import t
from careloop.engine.plugins import make_manager, use_manager

MODULE = "careloop_example.robot_pages"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CARELOOP_HOSPITAL_NAME", "仁心医院")
    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", "0571-8888 0000")
    with use_manager(make_manager([importlib.import_module(MODULE)])):
        from careloop.web.app import create_app

        with TestClient(create_app()) as client:
            yield client


def test_the_plugin_page_is_served_in_both_languages(client: TestClient) -> None:
    page = client.get("/robot/about", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 200
    assert "随访电话机器人" in page.text and "仁心医院" in page.text
    assert "请拨打 0571-8888 0000" in page.text
    assert 'lang="zh-CN"' in page.text  # the web app's own layout (base.html) around it
    assert "careloop_example." not in page.text  # no key shown where a translation is missing
    english = client.get("/robot/about", headers={"Accept-Language": "en"})
    assert "The follow-up phone robot" in english.text and "0571-8888 0000" in english.text
    assert t("common.yes", "en") == "Yes"  # the core catalogue is still merged in


def test_without_the_plugin_there_is_no_page_and_no_text() -> None:
    from careloop.web.app import create_app

    with use_manager(make_manager(installed=False)):  # the core alone, even where it is installed
        with TestClient(create_app()) as client:
            assert client.get("/robot/about").status_code == 404
        assert t("careloop_example.robot.title", "zh-CN") == "careloop_example.robot.title"
