"""A small WebDriver BiDi client for Debian's Firefox ESR (``/usr/bin/firefox-esr``).

Playwright drives only its own patched Firefox builds (and its BiDi channel needs commands newer
than ESR offers), and there is no geckodriver without internet, so the builder's Firefox test
speaks WebDriver BiDi — the W3C protocol Firefox serves itself on ``--remote-debugging-port`` —
over one websocket: navigate, evaluate script, real keyboard and pointer input
(``input.performActions``), and the console log (``log.entryAdded``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.client import ClientConnection, connect

FIREFOX = "/usr/bin/firefox-esr"


class BiDiError(AssertionError):
    pass


class Firefox:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        self.call("session.new", {"capabilities": {}})
        self.call("session.subscribe", {"events": ["log.entryAdded"]})
        # a window opened over BiDi in the foreground has focus (the start-up window of a
        # headless Firefox does not, and without focus no blur/change events fire)
        created = self.call("browsingContext.create", {"type": "window", "background": False})
        self.context = created["context"]
        self.call("browsingContext.setViewport", {
            "context": self.context, "viewport": {"width": 1600, "height": 1000}})

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("type") == "event":
                entry = message.get("params", {})
                if message.get("method") == "log.entryAdded" and entry.get("level") == "error":
                    self.errors.append(str(entry.get("text")))
                continue
            if message.get("id") == self.next_id:
                if message.get("type") == "error":
                    raise BiDiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def goto(self, url: str) -> None:
        self.call("browsingContext.navigate", {"context": self.context, "url": url,
                                               "wait": "complete"})

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (awaited) and return its JSON value."""
        result = self.call("script.evaluate", {
            "expression": f"(async () => JSON.stringify(await ({expression})))()",
            "target": {"context": self.context}, "awaitPromise": True})
        if result.get("type") == "exception":
            raise BiDiError(f"{expression}: {result['exceptionDetails'].get('text')}")
        value = result["result"].get("value")
        return json.loads(value) if isinstance(value, str) else None

    def wait(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BiDiError(f"timed out waiting for: {expression}")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real pointer click at the centre of the element."""
        box = self.wait(f"""(() => {{ const n = document.querySelector({json.dumps(selector)});
            if (!n) return null; n.scrollIntoView({{block: "center"}});
            const r = n.getBoundingClientRect();
            return r.width ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""")
        x, y = round(box[0]), round(box[1])
        self.call("input.performActions", {"context": self.context, "actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "x": x, "y": y},
                        {"type": "pointerDown", "button": 0},
                        {"type": "pointerUp", "button": 0}]}]})

    def type(self, text: str) -> None:
        """Real key presses into the focused element (``\\t`` Tab, ``\\n`` Enter)."""
        keys = {"\t": "\ue004", "\n": "\ue007"}
        actions = []
        for ch in text:
            key = keys.get(ch, ch)
            actions += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self.call("input.performActions", {"context": self.context, "actions": [{
            "type": "key", "id": "keyboard", "actions": actions}]})

    def fill(self, selector: str, text: str) -> None:
        """Focus, clear and type ``text``, then Tab (the change event commits the edit)."""
        self.click(selector)
        self.js(f"(() => {{ const n = document.querySelector({json.dumps(selector)}); "
                "n.select && n.select(); return true; })()")
        self.type("\ue003" + text + "\t")  # Backspace clears the selection

    def select(self, selector: str, value: str) -> None:
        """Choose an option of a <select> (its native popup is not part of the page)."""
        self.js(f"""(() => {{ const n = document.querySelector({json.dumps(selector)});
            n.value = {json.dumps(value)}; n.dispatchEvent(new Event("change", {{bubbles: true}}));
            return true; }})()""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def firefox() -> Iterator[Firefox]:
    """Headless Firefox ESR with a fresh profile, driven over WebDriver BiDi."""
    profile = tempfile.mkdtemp(prefix="careloop-ff-")
    # a quiet profile: no default-browser check, telemetry or updates; focus as in tests
    with open(f"{profile}/user.js", "w", encoding="utf-8") as prefs:
        prefs.write('user_pref("focusmanager.testmode", true);\n'
                    'user_pref("browser.shell.checkDefaultBrowser", false);\n'
                    'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
                    'user_pref("app.update.disabledForTesting", true);\n')
    port = _free_port()
    proc = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", profile,
                             f"--remote-debugging-port={port}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/session", max_size=None)
                break
            except Exception:  # refused, or the handshake before Firefox is ready
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with ws:
            yield Firefox(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
