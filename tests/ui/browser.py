"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol.

Why CDP and not Selenium: the protocol is a few JSON messages over a WebSocket, and
``websockets`` is already in the lock (through uvicorn); Selenium would be a heavy new
dependency for four commands (navigate, evaluate, cookies, screenshot).

The browser runs with a throw-away profile, no network services of its own (no sync,
component updates or QUIC), and its DevTools endpoint on 127.0.0.1 only, on a port it picks.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def chromium_binary() -> str:
    """The Chromium executable; an AssertionError (the test fails, no skip) when missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Chromium is required for the browser tests: apt-get install -y chromium chromium-driver")


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1440, height: int = 900) -> None:
        self.width, self.height = width, height
        self._profile = Path(tempfile.mkdtemp(prefix="wx-chromium-"))
        self._proc: subprocess.Popen | None = None
        self._ws = None
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        self._proc = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port(timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t.get("type") == "page"]
        assert pages, "Chromium opened no page"
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _devtools_port(self, timeout: float) -> int:
        # With --remote-debugging-port=0 Chromium picks a free port and writes it here.
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(f"Chromium exited at start (exit {self._proc.returncode})")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().splitlines()[0])
            time.sleep(0.1)
        raise AssertionError("Chromium's DevTools endpoint did not come up in time")

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        assert self._ws is not None
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer to {method} within {timeout} s")
            message = json.loads(self._ws.recv(timeout=remaining))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript error: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout: float = 30) -> int | None:
        """Open ``url``, wait until the *new* document has loaded; returns its HTTP status.

        The page open before may still fire its own load event after this call starts (a page
        whose text a test already waited for need not have finished loading): the old document
        is marked, and only a loaded document without the mark counts.
        """
        self.evaluate("window.__wxPrevious = true")
        self.events.clear()
        frame = self.send("Page.navigate", url=url)
        if frame.get("errorText"):
            raise AssertionError(f"navigation to {url} failed: {frame['errorText']}")

        def loaded() -> bool:
            try:
                return bool(self.evaluate("!window.__wxPrevious && document.readyState === 'complete'"))
            except AssertionError:  # the old document's context went away mid-question: ask again
                return False

        self.wait_for(loaded, timeout, f"{url} to load")
        status = None
        for event in self.events:
            if event.get("method") == "Network.responseReceived" and event["params"].get("type") == "Document":
                status = event["params"]["response"]["status"]
        return status

    def wait_for(self, condition, timeout: float = 30, what: str = "the condition") -> None:
        """Poll ``condition()`` until it is true."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                where = self.evaluate("location.href") if self._ws is not None else "?"
                raise AssertionError(f"timed out waiting for {what} (at {where}: {self.text()[:300]!r})")
            time.sleep(0.25)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as keyboard input (frameworks see real input events)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """Click the element."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self) -> str:
        """The page's visible text."""
        return self.evaluate("document.body ? document.body.innerText : ''")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole scrollable page when ``full_page``)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:  # the page's whole height (at least the window's), at the window's width
            size = self.send("Page.getLayoutMetrics").get("cssContentSize") or {}
            height = max(self.height, int(size.get("height") or 0))
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def fetch_status(browser: Browser, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    """The status of a same-origin ``fetch`` from the page: it sends the browser's own login cookie."""
    options = json.dumps({"method": method, "credentials": "same-origin", "headers": headers or {}})
    return browser.evaluate(f"fetch({json.dumps(path)}, {options}).then(r => r.status)")


def log_in_fab(browser: Browser, base: str, view: str, username: str, password: str) -> None:
    """Log in through FAB's own login form, to which ``view`` (a path of ``base``) sends the browser."""
    browser.send("Network.clearBrowserCookies")
    browser.navigate(f"{base}{view}")
    browser.wait_for(lambda: "/auth/login" in browser.evaluate("location.href"), 30, "the redirect to FAB's login")
    browser.wait_for(lambda: browser.evaluate("!!document.querySelector('input#password')"), 30, "FAB's login form")
    browser.type_into("input#username", username)
    browser.type_into("input#password", password)
    browser.click("input[type=submit]")
    browser.wait_for(lambda: browser.evaluate("location.pathname") == view, 60, "the way back to the view")
