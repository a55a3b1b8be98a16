"""Open a page in headless Chromium and record console errors, exceptions and network requests.

Speaks the DevTools protocol over `--remote-debugging-pipe` (JSON messages separated by NUL bytes on file
descriptors 3 and 4), so no websocket library is needed. Test helper only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLog:
    """What happened while a page loaded."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    loaded: bool = False
    values: dict[str, object] = field(default_factory=dict)

    @property
    def network_requests(self) -> list[str]:
        """Requests for anything but the page file itself and data: URIs."""
        return [u for u in self.requests if not (u.startswith("data:") or u.startswith("file:"))]


class _Pipe:
    def __init__(self, binary: str, profile: str) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        # the child reads commands on fd 3 and writes replies on fd 4
        def setup() -> None:
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=setup, pass_fds=(3, 4))  # kept open: preexec_fn put the pipes there
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg: dict[str, object] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._id

    def read(self, timeout: float) -> dict | None:
        import select

        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        want = self.send(method, params, session)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.read(end - time.monotonic())
            if msg is None:
                break
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(f"no reply to {method}")

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        finally:
            os.close(self._w)
            os.close(self._r)


def open_page(path: Path, expressions: dict[str, str] | None = None, timeout: float = 60, settle: float = 1.0) -> PageLog:
    """Load `path` in a fresh headless Chromium; evaluate `expressions` (name → JS) after load."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium not installed")
    log = PageLog()
    with tempfile.TemporaryDirectory(prefix="emovec-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            end = time.monotonic() + timeout
            settle_until = None
            while time.monotonic() < end and (settle_until is None or time.monotonic() < settle_until):
                msg = pipe.read(0.2)
                if msg is not None:
                    pipe.events.append(msg)
                    if msg.get("method") == "Page.loadEventFired" and settle_until is None:
                        log.loaded = True
                        settle_until = time.monotonic() + settle
            for name, expr in (expressions or {}).items():
                res = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
                log.values[name] = res.get("result", {}).get("value")
            while (msg := pipe.read(0.3)) is not None:  # events caused by the expressions
                pipe.events.append(msg)
        finally:
            pipe.close()
    for ev in pipe.events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            log.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            log.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            log.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            log.requests.append(params.get("request", {}).get("url", ""))
    return log
