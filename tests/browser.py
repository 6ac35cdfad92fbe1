"""A small headless-Chromium driver for tests: the Chrome DevTools Protocol over a websocket (aiohttp).

Uses the system's browser (Debian's `chromium`, at /usr/bin/chromium or $ATS_CHROMIUM);
nothing is downloaded. Every wait is bounded, and `close()` kills the browser and
removes its profile folder.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("ATS_CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 30
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]


class BrowserError(Exception):
    pass


def chromium_path() -> str:
    """The browser binary, or an error that says how to install it (the tests never skip)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise BrowserError(
            f"headless Chromium not found at {CHROMIUM}: install Debian's browser with"
            " `apt-get install -y chromium` (or set ATS_CHROMIUM to its path)"
        )
    return CHROMIUM


class Browser:
    """One headless Chromium with one page, driven over CDP's flattened session mode."""

    def __init__(self, width: int = 1280, height: int = 900):
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="ats-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session = ""
        self.console_errors: list[str] = []

    async def start(self) -> "Browser":
        binary = chromium_path()
        self._stderr_file = open(os.path.join(self.profile, "stderr.txt"), "wb")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._stderr_file, start_new_session=True,
        )
        ws_url = await self._devtools_url()
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=256 * 1024 * 1024, timeout=aiohttp.ClientWSTimeout(ws_close=5))
        self._reader = asyncio.create_task(self._read())
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        self._session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        return self

    async def _devtools_url(self) -> str:
        """The browser's websocket URL, from the DevToolsActivePort file it writes once it listens."""
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {self._stderr()}")
            try:
                with open(path) as f:
                    lines = f.read().split()
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.05)
        raise BrowserError(f"chromium did not open its DevTools port in {START_TIMEOUT_S} s: {self._stderr()}")

    def _stderr(self) -> str:
        try:
            with open(os.path.join(self.profile, "stderr.txt"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            if "id" in doc:
                future = self._pending.pop(doc["id"], None)
                if future is not None and not future.done():
                    future.set_result(doc)
            elif doc.get("method") == "Runtime.exceptionThrown":
                details = doc["params"]["exceptionDetails"]
                self.console_errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif doc.get("method") == "Runtime.consoleAPICalled" and doc["params"]["type"] == "error":
                self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in doc["params"]["args"]))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One CDP command on the page's session (browser-level before attaching); its result."""
        assert self._ws is not None
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if self._session:
            msg["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps(msg))
        try:
            doc = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        finally:
            self._pending.pop(msg_id, None)
        if "error" in doc:
            raise BrowserError(f"{method}: {doc['error']}")
        return doc["result"]

    async def goto(self, url: str, timeout_s: float = 20) -> None:
        """Navigate and wait until the document has loaded."""
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout_s, what=f"{url} to load")

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited, results by value)."""
        result = await self.send("Runtime.evaluate",
                                 {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15, what: str | None = None) -> Any:
        """Poll an expression until it is truthy; its value. Raises after timeout_s."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.eval(expression)
            except BrowserError as e:
                last = e
            if last and not isinstance(last, BrowserError):
                return last
            await asyncio.sleep(0.1)
        raise BrowserError(f"timed out after {timeout_s} s waiting for {what or expression} (last: {last!r})")

    async def screenshot(self, path: str, full_page: bool = True) -> str:
        """Save a PNG of the page (the whole page by default); returns the path."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = await self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": max(size[0], self.width), "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        data = (await self.send("Page.captureScreenshot", params))["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    async def close(self) -> None:
        """Kill the browser and remove its profile; safe to call twice."""
        try:
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                try:
                    await asyncio.wait_for(self._reader, 5)
                except (asyncio.TimeoutError, Exception):
                    self._reader.cancel()
            if self._http is not None:
                await self._http.close()
        finally:
            self._ws = self._http = self._reader = None
            if self.proc is not None and self.proc.poll() is None:
                # the whole process group: chromium's renderer and utility processes too
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
            if self._stderr_file is not None:
                self._stderr_file.close()
                self._stderr_file = None
            shutil.rmtree(self.profile, ignore_errors=True)
