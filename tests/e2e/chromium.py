"""Open a page in headless Chromium and report what a reader would see, for the report tests.

Talks the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages separated by
NUL bytes, the browser reading fd 3 and writing fd 4), so it needs only the standard library and
the Debian package ``chromium``. ``render_page`` loads a file, waits for its load event and for
every image to decode, and returns the images / SVGs / canvases with their sizes, the tables'
text, every console error, uncaught exception or failed load, and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_NAMES", "find_chromium", "PageReport", "render_page", "ChromiumError"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0
WINDOW = (1200, 900)

# Runs in the page after load: waits for every image to decode, then describes what is shown.
_INSPECT = """
(async () => {
  await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    title: document.title,
    images: [...document.images].map(img => ({alt: img.alt, complete: img.complete,
      natural: [img.naturalWidth, img.naturalHeight], shown: box(img)})),
    svgs: [...document.querySelectorAll('svg')].map(el => ({shown: box(el)})),
    canvases: [...document.querySelectorAll('canvas')].map(el => ({natural: [el.width, el.height],
      shown: box(el)})),
    tables: [...document.querySelectorAll('table')].map(t => ({
      caption: t.caption ? t.caption.textContent : '',
      headers: [...t.querySelectorAll('thead th')].map(th => th.textContent),
      rows: [...t.querySelectorAll('tbody tr')].map(tr =>
        [...tr.querySelectorAll('td')].map(td => td.textContent))})),
  };
})()
"""


class ChromiumError(RuntimeError):
    """The browser did not start, answered with an error or took too long."""


@dataclass
class PageReport:
    """What the page showed (see ``_INSPECT``) and what went wrong while it loaded."""

    dom: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    screenshot_png: bytes = b""


def find_chromium() -> str | None:
    """Path of a Chromium / Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Browser:
    """One headless browser process and its protocol pipe."""

    def __init__(self, executable: str, profile_dir: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [executable, "--headless", "--remote-debugging-pipe", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                f"--user-data-dir={profile_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        # The shell moves our pipe ends to fds 3 and 4 (no preexec_fn: unsafe with threads).
        self.process = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" about:blank 3<&0 4>&1 0</dev/null 1>/dev/null', *args],
            stdin=to_browser_r, stdout=from_browser_w, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, deadline: float | None = None) -> dict[str, Any]:
        """Send one command and return its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = deadline or time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, deadline: float) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise ChromiumError(f"no answer from the browser within {TIMEOUT_S:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ChromiumError(f"the browser exited (code {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", deadline=time.monotonic() + 5)
        except (ChromiumError, OSError):
            pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among the protocol events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            errors.append("console." + params["type"] + ": " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + str(details.get("exception", {}).get(
                "description", details.get("text", ""))))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = entry.get("url", "")
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} {where}".strip())
    return errors


def render_page(executable: str, page: Path) -> PageReport:
    """Load ``page`` (a local file) and describe it; ChromiumError when the browser fails."""
    with tempfile.TemporaryDirectory(prefix="fd-chromium-") as profile:
        browser = _Browser(executable, profile)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            target = browser.call("Target.createTarget", {"url": "about:blank"}, None, deadline)
            session = browser.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                             "flatten": True},
                                   None, deadline)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                browser.call(f"{domain}.enable", None, session, deadline)
            browser.call("Emulation.setDeviceMetricsOverride",
                         {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1,
                          "mobile": False}, session, deadline)
            browser.events.clear()
            browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session, deadline)
            browser.wait_event("Page.loadEventFired", deadline)
            dom = browser.call("Runtime.evaluate", {"expression": _INSPECT, "awaitPromise": True,
                                                    "returnByValue": True}, session, deadline)
            if "exceptionDetails" in dom:
                raise ChromiumError(f"inspecting the page failed: {dom['exceptionDetails']}")
            metrics = browser.call("Page.getLayoutMetrics", None, session, deadline)
            height = int(metrics.get("cssContentSize", metrics.get("contentSize"))["height"])
            browser.call("Emulation.setDeviceMetricsOverride",
                         {"width": WINDOW[0], "height": max(height, 1), "deviceScaleFactor": 1,
                          "mobile": False}, session, deadline)
            shot = browser.call("Page.captureScreenshot", {"format": "png"}, session, deadline)
            return PageReport(dom=dom["result"]["value"], errors=_errors(browser.events),
                              screenshot_png=base64.b64decode(shot["data"]))
        finally:
            browser.close()
