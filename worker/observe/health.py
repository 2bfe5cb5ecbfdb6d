"""/metrics, /healthz (process and poll loop alive) and /readyz (model warm, group joined, output
side working), served from one small HTTP server thread."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.errors import WorkerError
from worker.observe.metrics import Metrics


class Health:
    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.last_beat = time.monotonic()
        self.model_ready = False
        self.joined = False
        self.output_check: Callable[[], bool] = lambda: True  # the publisher's: no failure since its last success
        self.output_error = ""
        self.brokers_check: Callable[[], bool] = lambda: True  # no cluster known to be unreachable
        self.input_topic_missing = ""  # the input topic, while the cluster says it does not exist
        self.stopping = False
        self.threads: list[threading.Thread] = []

    def watch(self, thread: threading.Thread) -> None:
        """A thread the worker cannot do without: /healthz turns red if it dies."""
        self.threads.append(thread)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def live(self) -> tuple[bool, dict[str, object]]:
        age = time.monotonic() - self.last_beat
        dead = [t.name for t in self.threads if not t.is_alive()]
        ok = age < self.stall_after_s and not dead
        body: dict[str, object] = {"status": "ok" if ok else "stalled", "poll_loop_age_s": round(age, 3)}
        if dead:
            body["dead_threads"] = dead
        return ok, body

    def ready(self) -> tuple[bool, dict[str, object]]:
        live, _ = self.live()
        output_ok = self.output_check()
        checks = {"model_loaded": self.model_ready, "group_joined": self.joined,
                  "brokers_reachable": self.brokers_check(), "input_topic_exists": not self.input_topic_missing,
                  "output_ok": output_ok, "poll_loop_alive": live, "not_stopping": not self.stopping}
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ready" if ok else "not ready", **checks}
        if not output_ok:
            body["output_error"] = self.output_error
        return ok, body


class ObserveServer:
    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    metrics_ref.ready.set(1 if health_ref.ready()[0] else 0)
                    self._send(200, generate_latest(metrics_ref.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, body = health_ref.live() if path == "/healthz" else health_ref.ready()
                    self._send(200 if ok else 503, orjson.dumps(body), "application/json")
                else:
                    self._send(404, b'{"error":"not found"}', "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise WorkerError(bind_problem(host, port, exc)) from None
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="observe-http", daemon=True)

    def start(self) -> ObserveServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bind_problem(host: str, port: int, exc: OSError) -> str:
    """One line: why the metrics and health server cannot listen on host:port, and what to set."""
    set_port = "set observe.port (EMOTION_WORKER_OBSERVE__PORT)"
    if exc.errno == errno.EADDRINUSE:
        return (f"observe.port {port} is in use (another worker on this host?): {set_port} to a free port, "
                "or 0 for any")
    if exc.errno == errno.EACCES:
        return f"observe.port {port} needs privileges to listen on: {set_port} to 1024 or above, or 0 for any"
    set_host = "set observe.host (EMOTION_WORKER_OBSERVE__HOST) to an address of this host, or 0.0.0.0 for all"
    if isinstance(exc, socket.gaierror):
        return f"observe.host {host!r} cannot be resolved ({exc.strerror}): {set_host}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"observe.host {host!r} is not an address of this host ({exc.strerror}): {set_host}"
    return (f"cannot serve metrics and health on {host}:{port} ({exc.strerror or exc}): check observe.host "
            "and observe.port (EMOTION_WORKER_OBSERVE__HOST, EMOTION_WORKER_OBSERVE__PORT)")
