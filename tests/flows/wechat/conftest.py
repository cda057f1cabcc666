"""Fixtures of the WeChat / WeCom tests: the local provider emulation (wechat_fake.py) and a
bundle with a WeChat and a WeCom template."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import wechat_fake  # noqa: E402


@pytest.fixture
def fake_wechat(monkeypatch: pytest.MonkeyPatch) -> Iterator[wechat_fake.FakeWeChat]:
    yield from wechat_fake.serve(monkeypatch)


@pytest.fixture
def wechat_bundle(tmp_path: Path) -> Path:
    return wechat_fake.make_bundle(tmp_path)
