"""How `catdog serve` runs the app on uvicorn: bounds for slow and idle clients, and a clean exit.

    >>> run(create_app(predictor, Settings(read_timeout_s=30)), port=8000)   # blocks until SIGTERM or Ctrl-C

uvicorn bounds a keep-alive connection between requests, but not the time a client takes to
send one: headers trickled a byte at a time, or a body slower than its Content-Length, held a
connection for as long as the client liked. `Protocol` bounds each state of a connection:

    idle       no byte of a request yet: closed without an answer after uvicorn's
               `timeout_keep_alive` (5 s), from the connection's start as between requests
    reading    from a request's first byte, `read_timeout_s` to send all of it, headers and
               body: then 408 and the connection closes
    answering  the app's own `timeout_s` (504)
    closing    after an answer the server writes itself (400, 408), it sends its FIN and reads
               and drops what the client still sends for up to LINGER_S, as nginx's lingering
               close does: closing at once with unread bytes would send a TCP reset, which
               can reach the client before it has read its answer

`run` exits quietly after SIGTERM: uvicorn re-raises the signal once it has shut down, which
would kill the process (status 143) even after a clean drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from catdog import __version__
from catdog.errors import InputsFailed

DRAIN_S = 30  # after SIGTERM or Ctrl-C, the requests in flight get this long to be answered
LINGER_S = 2.0  # after its own answer, the server drops what the client still sends for this long


class Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline to read each request, X-Catdog-Version on the
    answers it writes itself (400, 408), and one log line for a client gone before its answer."""

    def __init__(self, *args, read_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.read_deadline: asyncio.TimerHandle | None = None
        self.lingering: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self.lingering is not None:  # answered and half-closed: the rest of the request is dropped
            return
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # a pipelined request may already be half in

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn.our_state is h11.SEND_RESPONSE:  # a request came in, and no answer has begun
            self.logger.info('%s - "%s %s HTTP/%s" client disconnected before its answer', self._peer(),
                             self.scope["method"], self.scope["path"], self.scope["http_version"])
        self._stop_reading()
        if self.lingering is not None:
            self.lingering.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._answer(400, msg)

    def _watch(self) -> None:
        """Arms the bound that fits what the connection is doing now: reading a request, or idle."""
        if self.transport.is_closing():
            return
        their_state = self.conn.their_state
        if their_state is h11.SEND_BODY or (their_state is h11.IDLE and self.conn.trailing_data[0]):
            self._unset_keepalive_if_required()  # reading now, not idle
            if self.read_deadline is None:  # a request's first bytes: its clock starts
                self.read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)
            return
        self._stop_reading()
        if their_state is h11.IDLE and self.timeout_keep_alive_task is None:  # uvicorn arms it only after a response
            idle = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self.timeout_keep_alive_task = idle

    def _stop_reading(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self) -> None:
        """408 unless an answer has begun; either way the connection closes (its request never came in full)."""
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if self.conn.our_state is h11.SEND_BODY:  # an early answer (say 413) is being written: close after it
            self.cycle.keep_alive = False
        elif self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.logger.warning("%s - request not read in full within %g s: 408", self._peer(), self.read_timeout)
            if self.conn.our_state is h11.SEND_RESPONSE:  # the app waits for the body: it must not answer too
                self.cycle.disconnected = True
            self._answer(408, f"request not read in full within {self.read_timeout:g} s (the server's read timeout)")
        else:  # answered early; the rest of the body is not wanted
            self._close()

    def _answer(self, status: int, text: str) -> None:
        """A plain-text answer written by the server itself, not the app; the connection then closes."""
        body = text.encode()
        headers = [*self.server_state.default_headers, (b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                   (b"x-catdog-version", __version__.encode())]
        for event in (h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self._close()

    def _close(self) -> None:
        """Closes once the answer is out and the client has stopped sending (or after LINGER_S)."""
        if self.lingering is not None or self.transport.is_closing():
            return
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        self.transport.write_eof()  # FIN after the answer; the client's EOF then closes the transport
        self.lingering = self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()  # keep draining what the client sends, even if a pipelined request paused it

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "-"


class Server(uvicorn.Server):
    """uvicorn's Server; `cut_off` counts the requests its shutdown cancelled after the drain's bound."""

    cut_off = 0

    async def shutdown(self, sockets=None) -> None:
        in_flight = set(self.server_state.tasks)
        await super().shutdown(sockets)
        # uvicorn's request handler logs and swallows their CancelledError, but each task still counts it
        self.cut_off = sum(task.cancelling() > 0 for task in in_flight)


def config(app, host: str = "127.0.0.1", port: int = 8000, **options) -> uvicorn.Config:
    """The uvicorn settings `catdog serve` runs `app` (from `create_app`) with; `options` override them."""
    protocol = functools.partial(Protocol, read_timeout=app.state.settings.read_timeout_s)
    defaults = dict(http=protocol, timeout_graceful_shutdown=DRAIN_S, log_level="info", server_header=False)
    return uvicorn.Config(app, host=host, port=port, **(defaults | options))


def run(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serves `app` until SIGTERM or Ctrl-C, answers the requests in flight (up to DRAIN_S), then returns.

    SIGTERM returns normally (exit status 0); Ctrl-C raises KeyboardInterrupt (130); requests the
    drain had to cut off raise InputsFailed (1).
    """
    server = Server(config(app, host, port))
    with _sigterm_stops(server):
        server.run()
    if server.cut_off:
        raise InputsFailed(f"serve: {server.cut_off} request(s) still running {DRAIN_S} s after the stop were cut off")


@contextlib.contextmanager
def _sigterm_stops(server: Server):
    """SIGTERM stops `server`, also when it comes just before or after uvicorn's own handler is in place.

    uvicorn re-raises the SIGTERM it stopped for once its shutdown is done; under the default
    handler that killed the process (status 143), here it only asks a stopped server to stop.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread has signal handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
