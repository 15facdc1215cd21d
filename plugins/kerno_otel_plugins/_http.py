"""The daemon's HTTP(S) server: a thread per connection up to a bound, timeouts, a reaper.

The server knows nothing about tokens or metrics: it parses requests and hands
each to an ``app`` callable (:class:`Request` -> :class:`Response`); the auth
plugin (``kerno_otel_plugins.auth``) is that app. What it guarantees:

- every thread is a daemon thread; each accepted connection is served on a
  thread of its own, up to ``max_connections`` at once; beyond that the
  connection that has waited longest for its request head is cut to make room
  (counted in ``shed``), so slow clients, however many, cannot keep a scrape
  out: they only push each other out. A fixed pool of a few
  workers let as many slow clients, each sending half a request line, hold
  every worker while authorized scrapes waited (issue 11, item 16): a slow
  client now costs one idle thread, never anyone else's turn;
- every socket read or write times out after ``timeout`` seconds, and a reaper
  shuts any connection down whose current request (or TLS handshake) takes
  longer than ``request_deadline``, so a client trickling bytes cannot hold
  its thread for long either;
- with TLS the handshake runs in the worker (``do_handshake_on_connect=False``),
  so a failed handshake is reported with the peer address through
  ``on_handshake_failure``.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

#: Methods the handler answers (with 405 past auth when the route does not take them).
_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


@dataclass(frozen=True)
class Request:
    """One parsed request: ``target`` as sent (with query), ``path`` without it."""

    method: str
    target: str
    path: str
    headers: Message
    remote_ip: str


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[Request], Response]
#: ``on_handshake_failure(remote_ip, error)``.
HandshakeFailure = Callable[[str, ssl.SSLError], None]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[v6]:port"`` -> (host, port). Raises ValueError naming the problem."""
    host, sep, port_text = str(listen).rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _Handler(http.server.BaseHTTPRequestHandler):
    """Parses requests off one connection (keep-alive) and answers with the server's app."""

    protocol_version = "HTTP/1.1"
    server_version = "kerno-otel"
    sys_version = ""
    # Headers and body go out in two writes; with Nagle on, delayed ACKs cost ~40 ms each.
    disable_nagle_algorithm = True
    server: HttpServer  # type: ignore[assignment]  # ours, not a socketserver
    raw_requestline: bytes  # set by handle_one_request; typeshed omits it

    def handle_one_request(self) -> None:
        # Each request gets its own deadline; the reaper enforces it.
        self.server._set_deadline(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        # A request line without its newline was cut short (by the peer or the
        # reaper); HTTP/0.9 has no headers to authenticate. Neither is answered.
        if not self.raw_requestline.endswith(b"\n"):
            self.close_connection = True
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.close_connection = True
            return False
        return True

    def _serve(self) -> None:
        self.server._head_read(self.connection)
        if self.server._was_cut(self.connection):
            # The reaper ended this request mid-way: what was read is not a request.
            self.close_connection = True
            return
        target = self.path
        path = urlsplit(target).path or "/"
        # A body we do not read would be parsed as the next request: close instead.
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        request = Request(self.command, target, path, self.headers, self.client_address[0])
        try:
            response = self.server.app(request)
        except Exception as exc:  # the app must not kill the worker
            self.server._report(f"http: {path}: {exc!r}")
            response = Response(500, "text/plain; charset=utf-8", b"internal error\n")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # No access log on stderr: refusals are audited, the rest is /metrics.
        pass


class HttpServer:
    """A small HTTP(S) server on one listening socket; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_handshake_failure: HandshakeFailure | None = None,
        max_connections: int = 256,
        timeout: float = 5.0,
        request_deadline: float = 15.0,
        stderr: TextIO | None = None,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.request_deadline = request_deadline
        self._ssl = ssl_context
        self._on_handshake_failure = on_handshake_failure
        self._stderr = stderr if stderr is not None else sys.stderr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(128)
            # accept() wakes up this often to notice stop().
            self._sock.settimeout(0.2)
        except OSError:
            self._sock.close()
            raise
        bound = self._sock.getsockname()
        self.host: str = bound[0]
        self.port: int = bound[1]
        self._slots = threading.BoundedSemaphore(max(1, max_connections))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Connection threads alive (joined by stop()).
        self._serving: set[threading.Thread] = set()
        self._lock = threading.Lock()
        #: Live connections and the monotonic time their current request must end by.
        self._active: dict[socket.socket, float] = {}
        #: Connections the reaper cut (their partial requests are not served).
        self._cut: set[socket.socket] = set()
        #: Connections whose request head is read (being answered): never cut for room.
        self._answering: set[socket.socket] = set()
        #: Connections closed unserved because ``max_connections`` were being served.
        self.shed = 0

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def start(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [
            ("kerno-http-accept", self._accept_loop),
            ("kerno-http-reaper", self._reap_loop),
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut live connections, join every thread. Safe twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        # The accept loop first: no connection thread starts after this.
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            live = list(self._active)
            self._cut.update(live)
            serving = list(self._serving)
        for conn in live:
            _shutdown(conn)
        for thread in serving:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._sock.close()

    # --- threads ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: do not spin
                continue
            if not self._slots.acquire(blocking=False) and not (
                self._make_room() and self._slots.acquire(timeout=self.timeout)
            ):
                self.shed += 1
                conn.close()
                continue
            # Registered before the thread runs, so stop() and the reaper see it.
            self._set_deadline(conn)
            thread = threading.Thread(
                target=self._work, args=(conn, str(peer[0])), name="kerno-http-conn", daemon=True
            )
            with self._lock:
                self._serving.add(thread)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: like a full table
                with self._lock:
                    self._serving.discard(thread)
                    self._active.pop(conn, None)
                self._slots.release()
                self.shed += 1
                conn.close()

    def _work(self, conn: socket.socket, ip: str) -> None:
        try:
            self._serve_connection(conn, ip)
        except OSError:
            pass  # resets, TLS alerts, timeouts: the client's problem, not news
        except Exception as exc:  # one bad connection must not cost the server
            self._report(f"http: connection error: {exc!r}")
        finally:
            with self._lock:
                self._active.pop(conn, None)
                self._cut.discard(conn)
                self._answering.discard(conn)
                self._serving.discard(threading.current_thread())
            conn.close()
            self._slots.release()

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [conn for conn, deadline in self._active.items() if deadline < now]
                self._cut.update(late)
            for conn in late:
                _shutdown(conn)

    # --- one connection ----------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket, ip: str) -> None:
        conn.settimeout(self.timeout)
        self._set_deadline(conn)
        if self._ssl is not None:
            tls = self._ssl.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            # The reaper must see the wrapper: shutting down the raw socket would do too,
            # but the wrapper is what the handler reads from.
            with self._lock:
                self._active.pop(conn, None)
                self._active[tls] = time.monotonic() + self.request_deadline
            try:
                tls.do_handshake()
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                tls.close()
                return  # connected and left (a port probe): nobody was refused
            except ssl.SSLError as exc:
                # A handshake the reaper (or stop) cut short refused nobody's certificate.
                # Recorded before the close, so the refusal is counted by the time the
                # client sees it.
                if self._on_handshake_failure is not None and not self._was_cut(tls):
                    self._on_handshake_failure(ip, exc)
                tls.close()
                return
            except OSError:
                tls.close()  # timeout or reset mid-handshake
                return
            try:
                _Handler(tls, (ip, 0), self)  # type: ignore[arg-type]
            finally:
                with self._lock:
                    self._active.pop(tls, None)
                    self._cut.discard(tls)
                    self._answering.discard(tls)
                tls.close()
            return
        _Handler(conn, (ip, 0), self)  # type: ignore[arg-type]

    def _was_cut(self, conn: socket.socket) -> bool:
        with self._lock:
            return conn in self._cut

    def _set_deadline(self, conn: socket.socket) -> None:
        with self._lock:
            self._active[conn] = time.monotonic() + self.request_deadline
            self._answering.discard(conn)

    def _head_read(self, conn: socket.socket) -> None:
        with self._lock:
            self._answering.add(conn)

    def _make_room(self) -> bool:
        """Cut the connection that has waited longest for its request head (a slow or idle
        client), so a new one gets its slot; False when every connection is being answered."""
        with self._lock:
            waiting = [
                (deadline, id(conn), conn)
                for conn, deadline in self._active.items()
                if conn not in self._answering and conn not in self._cut
            ]
            if not waiting:
                return False
            victim = min(waiting)[2]
            self._cut.add(victim)
        self.shed += 1
        _shutdown(victim)
        return True

    def _report(self, message: str) -> None:
        print(f"kerno-otel: {message}", file=self._stderr)


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
