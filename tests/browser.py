"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard library only.

The report is checked in a real browser (tests/test_browser.py) and the README screenshot is taken
from it (scripts/readme_screenshot.py); neither needs a driver download or a network port.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    """Chromium is missing, crashed, or did not answer in time."""


def find_chromium() -> str | None:
    """The browser to use: $AUDITOR_CHROMIUM, else the first Chromium or Chrome on PATH."""
    configured = os.environ.get("AUDITOR_CHROMIUM")
    if configured:
        return configured
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Chromium:
    """One headless browser with a fresh profile; commands and events over fds 3 and 4."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        executable = executable or find_chromium()
        if not executable:
            raise BrowserError("no Chromium found; install it (apt-get install -y chromium) "
                               "or set AUDITOR_CHROMIUM")
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="auditor-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # Chromium reads commands on fd 3 and writes answers on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                    for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)  # dup2 leaves the copies open across exec
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.front: str | None = None  # the session of the tab in front (others are throttled)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Run one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None, after: int = 0) -> dict:
        """The first event named ``method`` from ``events[after:]`` or still to come."""
        deadline = time.monotonic() + self.timeout
        seen = after
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId", session) == session:
                    return event
            seen = len(self.events)
            self.events.append(self._receive(deadline))

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab: load a page, watch its console and requests, evaluate, take screenshots."""

    def __init__(self, browser: Chromium, width: int = 1280, height: int = 900,
                 mobile: bool = False):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.resize(width, height, mobile)

    def send(self, method: str, params: dict | None = None) -> dict:
        if self.browser.front != self.session:  # a tab in the background may never answer
            self.browser.front = self.session
            self.browser.send("Page.bringToFront", None, self.session)
        return self.browser.send(method, params, self.session)

    def resize(self, width: int, height: int, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def load(self, url: str) -> None:
        """Navigate and wait for the load event (every image decoded or failed)."""
        start = len(self.browser.events)
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"could not open {url}: {reply['errorText']}")
        self.browser.wait_for("Page.loadEventFired", self.session, after=start)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression (promises awaited)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(f"script failed: {details.get('exception', {}).get('description')}")
        return reply["result"].get("value")

    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in self.browser.events
                if e.get("method") == method and e.get("sessionId") == self.session]

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and browser log errors, as text."""
        errors = [e["exceptionDetails"].get("text", "") + " "
                  + str(e["exceptionDetails"].get("exception", {}).get("description", ""))
                  for e in self._events("Runtime.exceptionThrown")]
        errors += [" ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
                   for e in self._events("Runtime.consoleAPICalled") if e["type"] == "error"]
        entries = [e["entry"] for e in self._events("Log.entryAdded")]
        errors += [f"{e.get('source')}: {e.get('text')} {e.get('url', '')}"
                   for e in entries if e["level"] == "error"]
        return errors

    def requests(self) -> list[str]:
        """Every URL the page asked for (data: URIs included)."""
        return [e["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    def failed_requests(self) -> list[str]:
        return [f"{e.get('type', '')} {e.get('errorText', '')}"
                for e in self._events("Network.loadingFailed")]

    def screenshot(self, path: str | Path, full_page: bool = False,
                   clip_height: int | None = None) -> Path:
        """A PNG of the viewport, of its top ``clip_height`` pixels, or of the whole page."""
        params: dict = {"format": "png"}
        width = self.evaluate("document.documentElement.clientWidth")
        if full_page:
            height = self.evaluate("document.documentElement.scrollHeight")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        elif clip_height:
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": clip_height, "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
