"""Drive a served web app in headless Chromium over the DevTools pipe (test helper): evaluate awaited JS,
take screenshots, and collect console errors, exceptions and every request the page made."""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path

from tests.headless_chromium import PageLog, _Pipe, chromium_binary


class Browser:
    def __init__(self, url: str, width: int = 1100, height: int = 760) -> None:
        binary = chromium_binary()
        if binary is None:
            raise FileNotFoundError("chromium not installed")
        self._profile = tempfile.TemporaryDirectory(prefix="emovec-chromium-")
        self.pipe = _Pipe(binary, self._profile.name)
        target = self.pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.pipe.call(f"{domain}.enable", session=self.session)
        self.pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                               "mobile": False}, session=self.session)
        self.pipe.call("Page.navigate", {"url": url}, session=self.session)
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(e.get("method") == "Page.loadEventFired" for e in self.pipe.events):
            msg = self.pipe.read(0.2)
            if msg is not None:
                self.pipe.events.append(msg)

    def eval(self, expression: str, timeout: float = 60) -> object:
        res = self.pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                             session=self.session, timeout=timeout)
        if "exceptionDetails" in res:
            raise AssertionError(res["exceptionDetails"])
        return res.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float = 60) -> None:
        """Poll a JS boolean expression in the page until it is true."""
        self.eval(f"new Promise((ok, bad) => {{ const t0 = Date.now(); const f = () => {{ if ({condition}) ok(true); "
                  f"else if (Date.now() - t0 > {int(timeout * 1000)}) bad(new Error('timeout: ' + {condition!r})); "
                  f"else setTimeout(f, 50); }}; f(); }})", timeout + 5)

    def screenshot(self, path: Path) -> None:
        data = self.pipe.call("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> PageLog:
        while (msg := self.pipe.read(0.3)) is not None:
            self.pipe.events.append(msg)
        self.pipe.close()
        self._profile.cleanup()
        log = PageLog(loaded=True)
        for ev in self.pipe.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                log.exceptions.append(str(params.get("exceptionDetails", {})))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                log.console_errors.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                log.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                log.requests.append(params.get("request", {}).get("url", ""))
        return log


# Replays the reply panes' DOM changes in order (each `textContent +=` adds a text node holding the text so far;
# a pane's "ended" class marks its reply's end) and records whether both ever held text while neither had ended.
WATCH_STREAMS = (
    "window.__bothBeforeEnd = false; const panes = ['out-plain', 'out-steered'].map(i => document.getElementById(i)); "
    "const state = {text: [false, false], ended: [false, false]}; new MutationObserver((records) => { "
    "records.forEach((r, i) => { if (r.type === 'attributes') { const next = records.slice(i + 1).find(q => "
    "q.type === 'attributes' && q.target === r.target); r.after = next ? next.oldValue : r.target.className; } }); "
    "for (const r of records) { const t = r.target.nodeType === 1 ? r.target : r.target.parentElement; "
    "const k = panes.findIndex(p => p.contains(t)); if (k < 0) continue; "
    "if (r.type === 'attributes') state.ended[k] = (r.after || '').split(' ').includes('ended'); "
    "else if (r.type === 'childList') state.text[k] = Array.from(r.addedNodes).some(n => n.textContent.length > 0); "
    "if (state.text[0] && state.text[1] && !state.ended[0] && !state.ended[1]) window.__bothBeforeEnd = true; } })"
    ".observe(document.querySelector('.pair'), {subtree: true, childList: true, characterData: true, "
    "attributes: true, attributeOldValue: true, attributeFilter: ['class']}); ")


def drive(url: str, text: str, hostile: str, shots: Path | None = None) -> tuple[dict[str, object], PageLog]:
    """Use every view the way a person would; returns what the page showed and the page's log."""
    b = Browser(url)
    seen: dict[str, object] = {}
    try:
        b.wait_for("document.querySelectorAll('#mon-emotion option').length > 0")
        b.eval(f"document.getElementById('mon-text').value = {text!r}; document.getElementById('mon-run').click(); 1")
        b.wait_for("document.querySelectorAll('#heatmap .tok').length > 0")
        seen["cells"] = b.eval("document.querySelectorAll('#heatmap .tok').length")
        seen["shown"] = b.eval("Array.from(document.querySelectorAll('#heatmap .tok')).map(s => s.textContent).join('')")
        b.eval("document.querySelector('#heatmap .tok:nth-child(3)').dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); 1")
        seen["hover"] = b.eval("document.getElementById('mon-hover').textContent")
        if shots:
            b.screenshot(shots / "serve-monitor.png")
        b.eval(f"document.getElementById('mon-text').value = {hostile!r}; document.getElementById('mon-run').click(); 1")
        b.wait_for(f"document.getElementById('heatmap').textContent.includes({hostile!r})")
        seen["hostile_elements"] = b.eval("document.querySelectorAll('#heatmap *:not(span)').length")
        seen["pwned"] = b.eval("window.__pwned === undefined ? 0 : 1")
        b.eval("document.querySelector('nav button[data-view=steer]').click(); "
               "document.getElementById('steer-prompt').value = 'Tell me about your day'; "
               "document.getElementById('steer-tokens').value = '8'; const r = document.querySelector('.slider input'); "
               "r.value = '0.3'; r.dispatchEvent(new Event('input')); " + WATCH_STREAMS +
               "document.getElementById('steer-run').click(); 1")
        b.wait_for("document.getElementById('steer-queue').textContent === 'done'", 120)
        seen["plain"] = b.eval("document.getElementById('out-plain').textContent")
        seen["steered"] = b.eval("document.getElementById('out-steered').textContent")
        seen["slider"] = b.eval("document.querySelector('.slider span:nth-child(3)').textContent")
        seen["interleaved"] = b.eval("window.__bothBeforeEnd")
        seen["ended"] = b.eval("document.querySelectorAll('.out.ended').length")
        if shots:
            b.screenshot(shots / "serve-steer.png")
        b.eval("document.querySelector('nav button[data-view=explore]').click(); 1")
        b.wait_for("document.querySelectorAll('#scatter circle').length > 0", 120)
        seen["points"] = b.eval("document.querySelectorAll('#scatter circle').length")
        b.eval("document.querySelector('#scatter circle').dispatchEvent(new MouseEvent('click', {bubbles: true})); 1")
        seen["detail"] = b.eval("document.getElementById('exp-detail').textContent")
        b.wait_for("document.getElementById('exp-report').textContent.length > 0")
        seen["report"] = b.eval("document.getElementById('exp-report').textContent")
        b.eval("const c = document.getElementById('exp-colour'); c.value = 'kmeans'; c.dispatchEvent(new Event('change')); 1")
        seen["legend"] = b.eval("document.querySelectorAll('#exp-legend div[data-k]').length")
        seen["fills"] = b.eval("new Set(Array.from(document.querySelectorAll('#scatter circle')).map(c => c.getAttribute('fill'))).size")
        seen["labels"] = b.eval("Array.from(document.querySelectorAll('#scatter circle')).map(c => Number(c.dataset.cluster))")
        b.eval("document.querySelector('#exp-legend div[data-k=\"0\"]').click(); 1")
        seen["picked"] = b.eval("document.querySelectorAll('#scatter circle:not([opacity])').length")
        b.eval("document.querySelector('#exp-legend div[data-k=\"0\"]').click(); 1")  # back to all
        if shots:
            b.screenshot(shots / "serve-explore.png")
    finally:
        log = b.close()
    return seen, log
