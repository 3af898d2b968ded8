"""A real HTTP receiver for webhook tests (and bench/webhooks.py): a threaded server on
127.0.0.1 that records every request and verifies it with the `standardwebhooks` package.

    receiver = Receiver().start()          receiver.url
    receiver.secrets = ["whsec_…"]          verified against each, separately
    receiver.script.extend([500, 200])      the statuses to answer next (then 200)
    receiver.hold_s = 2                      answer only after this long
    receiver.stop(); receiver.start()        down, then up again on the same port
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class _Server(ThreadingHTTPServer):
    # The default backlog (5) overflows under a burst of new connections, and a dropped
    # SYN is retried by the client only after a second: a receiver artefact, not ours.
    request_queue_size = 128


@dataclass
class Received:
    id: str
    timestamp: str
    signature: str
    body: bytes
    at: float  # time.time() when it arrived
    verified_with: list[str]  # the secrets (of receiver.secrets) that verified it
    payload: Any = None


@dataclass
class Receiver:
    port: int = 0
    secrets: list[str] = field(default_factory=list)
    script: deque[int | tuple[int, dict[str, str]]] = field(default_factory=deque)
    hold_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)  # ids received while one was in flight
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _connections: set[socket.socket] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver._arrived(dict(self.headers.items()), body)
                msg_id = self.headers.get("webhook-id", "")
                try:
                    if receiver.hold_s:
                        time.sleep(receiver.hold_s)
                    status, headers = receiver._next_answer()
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the sender went away (killed) while we held the answer
                    pass
                finally:
                    with receiver._lock:
                        receiver._in_flight[msg_id] -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: no new connections, and the kept-alive ones are cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _next_answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            step = self.script.popleft() if self.script else 200
        return step if isinstance(step, tuple) else (step, {})

    def _arrived(self, headers: dict[str, str], body: bytes) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        verified, payload = [], None
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, lowered)
                verified.append(secret)
            except WebhookVerificationError:
                pass
        msg_id = lowered.get("webhook-id", "")
        with self._lock:
            if self._in_flight.get(msg_id, 0) > 0:
                self.overlaps.append(msg_id)
            self._in_flight[msg_id] = self._in_flight.get(msg_id, 0) + 1
            self.received.append(
                Received(
                    id=msg_id,
                    timestamp=lowered.get("webhook-timestamp", ""),
                    signature=lowered.get("webhook-signature", ""),
                    body=body,
                    at=time.time(),
                    verified_with=verified,
                    payload=payload,
                )
            )

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.received]
