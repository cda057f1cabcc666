"""Security headers, generic error pages with a request id, request size limits, i18n."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from careloop.engine.i18n import catalogue

from .conftest import UserFactory, login


def test_security_headers_on_pages_and_api(client: TestClient) -> None:
    for path in ("/login", "/healthz", "/api/v1/openapi.json"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert len(response.headers["x-request-id"]) == 16
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert response.headers["permissions-policy"]
    static = client.get("/static/app.js")
    assert static.status_code == 200 and "no-store" not in static.headers["cache-control"]


def test_pages_have_no_inline_scripts(client: TestClient, user_factory: UserFactory) -> None:
    user_factory("nurse", "nurse", None)
    login(client, "nurse")
    for path in ("/login", "/", "/inbox"):
        html = client.get(path).text
        assert "<script>" not in html and "onclick=" not in html and " style=" not in html


def test_not_found_is_a_generic_page_with_the_request_id(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["x-request-id"] in response.text
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.json()["request_id"] == api.headers["x-request-id"]


def test_a_crash_shows_no_stack_trace(app: FastAPI, engine: object) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals 13812345678")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert "13812345678" not in response.text
    assert response.headers["content-security-policy"]
    request_id = response.headers["x-request-id"]
    assert request_id in response.text


def test_request_size_limit(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_MAX_BODY_BYTES", "1000")
    response = client.post("/login", content=b"x" * 2000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413

    def chunks() -> object:
        for _ in range(10):
            yield b"y" * 500

    streamed = client.post("/login", content=chunks(),  # type: ignore[arg-type]
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413


def test_language_switch_by_accept_language_and_cookie(client: TestClient) -> None:
    assert "登录" in client.get("/login").text
    assert "Sign in" in client.get("/login", headers={"Accept-Language": "en-US"}).text
    page = client.get("/login")
    from .conftest import csrf_from

    client.post("/locale", data={"locale": "en", "next": "/login",
                                 "csrf_token": csrf_from(page.text)})
    assert "Sign in" in client.get("/login").text


def test_every_web_message_exists_in_both_languages() -> None:
    zh = {k for k in catalogue("zh-CN") if k.startswith("web.")}
    en = {k for k in catalogue("en") if k.startswith("web.")}
    assert zh == en and len(zh) > 150


def test_nul_bytes_are_a_bad_request_not_a_crash(client: TestClient,
                                                user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", None)
    login(client, "doc")
    assert client.get("/api/v1/patients?q=%00").status_code == 400
    page = client.get("/login")
    from .conftest import csrf_from

    response = client.post("/login", data={"username": "a\x00b", "password": "x",
                                           "csrf_token": csrf_from(page.text)})
    assert response.status_code in (400, 401)


def test_no_cors_trace_listing_or_script_sinks(client: TestClient) -> None:
    """No cross-origin grant for any Origin, no TRACE, no directory listing of /static/, HTML
    declared UTF-8, and the shipped scripts use no HTML-writing or code-running sinks."""
    from pathlib import Path

    import careloop.web

    page = client.get("/login", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in page.headers
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    preflight = client.options("/api/v1/me", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert client.request("TRACE", "/login").status_code == 405
    assert client.get("/static/").status_code == 404
    static = Path(careloop.web.__file__).parent / "static"
    for script in static.rglob("*.js"):
        text = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "document.write", "eval(", "new Function",
                     "localStorage", "sessionStorage", "postMessage"):
            assert sink not in text, f"{script.name} uses {sink}"


def test_sign_in_redirects_only_within_the_site(client: TestClient,
                                                user_factory: UserFactory) -> None:
    from .conftest import PASSWORD, csrf_from

    user_factory("nurse_a", "nurse", None)
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example", "/"),
                             ("/\\evil.example", "/"), ("/inbox", "/inbox")):
        page = client.get("/login")
        response = client.post("/login", data={
            "username": "nurse_a", "password": PASSWORD, "csrf_token": csrf_from(page.text),
            "next": target}, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == expected, target
