"""Start the web app on uvicorn (one model per process), or in a background thread for tests and benchmarks."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import uvicorn

from emovec.errors import ConfigError
from emovec.serve.app import build_app
from emovec.serve.engine import Engine


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int) -> None:
    """Refuse a port outside 0..65535 or a host that is neither an IP address nor `localhost`."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}", param="port")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"host must be an IP address or localhost, got {host!r}", param="host") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_for(engine: Engine, host: str = "127.0.0.1", port: int = 8765) -> uvicorn.Server:
    config = uvicorn.Config(build_app(engine), host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted."""
    server_for(engine, host, port).run()


class Background:
    """A server on a free loopback port in a daemon thread: `with Background(engine) as url: ...`."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1") -> None:
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = server_for(engine, host, self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web app did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
