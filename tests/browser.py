"""Headless Chromium driven over the DevTools protocol (its websocket, through aiohttp): open a
page, record every console message, exception and request attempt, and evaluate script in it.

Debian's ``chromium`` package; absent, a test skips, except in CI (``CI=true``), where it fails:
a browser test that silently passes proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


def chromium_path() -> str:
    """The browser, or a skip (a failure in CI)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium"
                                         if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs Debian's package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@dataclass
class Page:
    """One tab: its websocket, and what it did."""

    ws: aiohttp.ClientWebSocketResponse
    console: list[str] = field(default_factory=list)  # errors and warnings, and exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page tried to fetch
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self.ws.send_json({"id": number, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (awaited when it is a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        loaded = self._events.setdefault("Page.loadEventFired", asyncio.Event())
        loaded.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(loaded.wait(), 30)

    async def pump(self) -> None:
        async for message in self.ws:
            doc = message.json()
            if "id" in doc:
                future = self._waiting.pop(doc["id"], None)
                if future is not None and not future.done():
                    future.set_result(doc)
                continue
            await self._event(doc["method"], doc.get("params", {}))

    async def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning",
                                                                       "assert"):
            self.console.append(" ".join(str(a.get("value", a.get("description")))
                                         for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.console.append(str(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            self.console.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Fetch.requestPaused":  # nothing leaves: every request is failed here
            self.requests.append(params["request"]["url"])
            asyncio.get_running_loop().create_task(self.ws.send_json({
                "id": next(self._ids), "method": "Fetch.failRequest",
                "params": {"requestId": params["requestId"], "errorReason": "BlockedByClient"}}))
        if method in self._events:
            self._events[method].set()


@contextlib.asynccontextmanager
async def chromium(width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A fresh headless Chromium with one tab, its console, network and page domains on."""
    binary = chromium_path()
    # Chromium's helper processes may still write the profile as it ends: a leftover file
    # there is no failure of the page under test
    with tempfile.TemporaryDirectory(prefix="cph-chromium-", ignore_cleanup_errors=True) as profile:
        proc = await asyncio.create_subprocess_exec(
            binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(1200):  # a minute: a loaded machine starts it slowly
                if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                    break
                if proc.returncode is not None:
                    raise AssertionError(f"chromium exited with {proc.returncode}")
                await asyncio.sleep(0.05)
            port = int(port_file.read_text().splitlines()[0])
            async with aiohttp.ClientSession() as session:
                async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as made:
                    target = await made.json(content_type=None)
                async with session.ws_connect(target["webSocketDebuggerUrl"],
                                              max_msg_size=0) as ws:
                    page = Page(ws)
                    pump = asyncio.create_task(page.pump())
                    try:
                        for domain in ("Runtime", "Log", "Network", "Page"):
                            await page.send(f"{domain}.enable")
                        await page.send("Fetch.enable", patterns=[{"urlPattern": "http*"},
                                                                  {"urlPattern": "ws*"}])
                        # the window has a minimum width; the viewport is what a phone has
                        await page.send("Emulation.setDeviceMetricsOverride", width=width,
                                        height=height, deviceScaleFactor=1,
                                        mobile=width < 600)
                        yield page
                    finally:
                        pump.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await pump
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
