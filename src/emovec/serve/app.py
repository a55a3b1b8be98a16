"""HTTP routes of the web app: JSON in, JSON or server-sent events out; static assets from the package.

Every route validates its input and answers a 4xx JSON `{"error", "param"}` on bad input; model work runs in
a worker thread behind the engine's queue; a client that disconnects (or presses stop) cancels its request,
which leaves the queue and removes any steering (the library's context managers do so in `finally`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from emovec.errors import ConfigError, EmovecError
from emovec.report.page import inline_script
from emovec.sampling import Sampling
from emovec.serve.engine import MAX_NEW_TOKENS, MAX_TEXT_CHARS, Cancelled, Engine

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}  # the only files served: no path from a request
MAX_BODY = 64 * 1024
MAX_EMOTIONS = 8
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}
# the static report's own policy (as in its <meta>): inline styles, data: figures, only its one shipped script
REPORT_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '{}'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'").format(inline_script("passage_filter.js")[1])


def error(message: str, status: int = 400, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "param": param}, status_code=status, headers=HEADERS)


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _HTTPError(413, f"the request body has {len(raw)} bytes; the limit is {MAX_BODY}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _HTTPError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _HTTPError(400, "the request body must be a JSON object")
    return data


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def number(data: dict[str, Any], key: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
    value = data.get(key, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a{'n integer' if integer else ' number'} in [{lo:g}, {hi:g}]", param=key)
    return value


def guarded(handler: Callable[..., Any]) -> Callable[[Request], Any]:
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except _HTTPError as exc:
            return error(str(exc), exc.status)
        except EmovecError as exc:
            return error(str(exc), 422 if not isinstance(exc, ConfigError) else 400, getattr(exc, "param", None))
    return route


def build_app(engine: Engine, title: str = "emovec") -> Starlette:
    """The Starlette app for one engine (one model per process)."""
    index = (STATIC / "index.html").read_text("utf-8")

    async def page(_request: Request) -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return error("not found", 404)
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)

    async def info(_request: Request) -> Response:
        v = engine.vecs
        return JSONResponse({"title": title, "model": engine.lm.spec.id, "emotions": v.emotions, "layers": v.layers,
                             "default_layer": v.default_layer, "max_text": MAX_TEXT_CHARS,
                             "max_new_tokens": MAX_NEW_TOKENS, "queue": len(engine.queue)}, headers=HEADERS)

    async def run_locked(request: Request, work: Callable[[], Any]) -> Any:
        cancelled = threading.Event()

        def job() -> Any:
            with engine.turn(cancelled):
                return work()

        task = asyncio.ensure_future(asyncio.to_thread(job))
        while not task.done():
            await asyncio.wait({task}, timeout=0.1)
            if not task.done() and await request.is_disconnected():
                cancelled.set()
        return task.result()

    async def monitor_route(request: Request) -> Response:
        data = await body_of(request)
        layer = engine.check_layer(data.get("layer"))
        text, transcript = data.get("text"), data.get("transcript")
        result = await run_locked(request, lambda: engine.read(text, transcript, layer))
        if data.get("format") == "html":
            return Response(engine.export_html(result), media_type="text/html; charset=utf-8",
                            headers={**HEADERS, "Content-Disposition": 'attachment; filename="monitor.html"'})
        return JSONResponse(engine.monitor_view(result), headers=HEADERS)

    async def explore_route(request: Request) -> Response:
        layer = engine.check_layer(int(request.query_params["layer"]) if request.query_params.get("layer", "").isdigit()
                                   else None)
        return JSONResponse(await run_locked(request, lambda: engine.explore(layer)), headers=HEADERS)

    async def steer_route(request: Request) -> Response:
        data = await body_of(request)
        ids = engine.prompt_ids(data.get("prompt"))
        weights = data.get("weights")
        if not isinstance(weights, dict) or not 0 < len(weights) <= MAX_EMOTIONS:
            raise ConfigError(f"weights must map 1..{MAX_EMOTIONS} emotions to strengths", param="weights")
        weights = {str(e): number(weights, e, 0, -1, 1) for e in weights}
        layers = data.get("layers") or [engine.vecs.default_layer]
        if not isinstance(layers, list) or len(layers) > len(engine.vecs.layers):
            raise ConfigError("layers must be a list of the artifact's layers", param="layers")
        directions = engine.vecs.directions(weights, [engine.check_layer(x) for x in layers])
        sampling = Sampling(max_new_tokens=number(data, "max_new_tokens", 48, 1, MAX_NEW_TOKENS, integer=True),
                            temperature=number(data, "temperature", 0.7, 0, 2), top_p=0.9,
                            seed=number(data, "seed", 0, 0, 2**31 - 1, integer=True))
        return StreamingResponse(stream(request, ids, sampling, directions), media_type="text/event-stream",
                                 headers={**HEADERS, "X-Accel-Buffering": "no"})

    async def stream(request: Request, ids: list[int], sampling: Sampling, directions: Any) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(kind: str, payload: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

        def job() -> None:
            try:
                with engine.turn(cancelled, lambda pos: emit("queue", {"position": pos})):
                    emit("queue", {"position": 0})
                    engine.generate_pair(ids, sampling, directions,
                                         lambda side, piece: emit("token", {"side": side, "text": piece}),
                                         lambda side: emit("end", {"side": side}), cancelled)
                emit("done", {})
            except Cancelled:
                emit("cancelled", {})
            except EmovecError as exc:
                emit("error", {"error": str(exc)})
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        worker = loop.run_in_executor(None, job)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        cancelled.set()
                    continue
                if item is None:
                    break
                yield f"event: {item[0]}\ndata: {json.dumps(item[1])}\n\n"
        finally:
            cancelled.set()  # the client left (or the stream ended): stop generating and leave the queue
            await asyncio.shield(worker)

    async def report_links(_request: Request) -> Response:
        return JSONResponse(engine.report_links(), headers=HEADERS)

    async def report_page(_request: Request) -> Response:
        """The artifact's static report (one fixed file, never a path from the request)."""
        if engine.report is None or not engine.report.is_file():
            return error(f"no report yet: run {engine.report_links()['make']}", 404)
        return FileResponse(engine.report, media_type="text/html; charset=utf-8",
                            headers={**HEADERS, "Content-Security-Policy": REPORT_CSP})

    async def queue_route(_request: Request) -> Response:
        return JSONResponse({"queue": len(engine.queue)}, headers=HEADERS)

    routes = [Route("/", page), Route("/static/{name}", asset), Route("/api/info", guarded(info)),
              Route("/api/monitor", guarded(monitor_route), methods=["POST"]),
              Route("/api/steer", guarded(steer_route), methods=["POST"]),
              Route("/api/explore", guarded(explore_route)), Route("/api/queue", queue_route),
              Route("/api/report", report_links), Route("/report", report_page)]
    return Starlette(routes=routes)
