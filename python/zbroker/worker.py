"""Majordomo worker (7/MDP): handlers per service; an I/O thread owns the sockets and heartbeats.

Threads: run() calls the handlers in the caller's thread; a background I/O thread owns one
DEALER per service (each one MDP worker), sends READY and HEARTBEAT, watches the broker's
liveness and reconnects. ZeroMQ sockets are not thread-safe, so requests and replies cross
between the two over an inproc PAIR, the only socket both threads touch (each its own end).
"""
import logging
import threading
import time

import msgpack
import zmq

from . import protocol
from .client import pack, unpack

log = logging.getLogger("zbroker.worker")

_POLL_MS = 100  # bounds every wait, so stop() is noticed promptly
_DISCONNECT_LINGER_MS = 1000  # lets DISCONNECT reach the broker without hanging the close
_PIPE = "inproc://zbroker-worker-jobs"  # each Worker has its own context: no collisions
_STOP = [b"stop"]  # handler thread to I/O thread: every reply is sent, say goodbye
_READ_BATCH = 64


class _Registration:
    def __init__(self, service, handler, raw):
        self.service = service
        self.handler = handler
        self.raw = raw


class _Connection:
    """One service's DEALER to the broker, with its heartbeat and liveness timers."""

    def __init__(self, slot, service, ready):
        self.slot = slot
        self.service = service
        self.ready = ready  # the READY message, with credit when not 1
        self.socket = None
        self.id = 0  # a reply is sent only on the connection its request came in on
        self.heartbeat_at = self.expires_at = self.reconnect_at = 0.0


class Worker:
    """Serves handlers for a broker: `handle()` each service, then `run()` (blocks) or `start()`
    (a background thread) until `stop()`.

    A handler gets the request decoded from msgpack and returns a value to encode; with raw=True
    it gets the body frames and returns bytes or a list of frames. A handler that raises answers
    {"error": "Type: message"}, as the C++ worker does, and the worker keeps serving.

    `heartbeat_ms` and `liveness` must match the broker's --heartbeat-ms and --liveness: after
    liveness x heartbeat_ms of broker silence, or a DISCONNECT, the worker waits `reconnect_ms`
    and registers again. `credit` > 1 lets the broker send that many requests ahead; they are
    still handled one at a time, in order. `curve`: CurveKeys for a broker with CURVE on.
    """

    def __init__(self, endpoint=protocol.DEFAULT_BROKER, *,
                 heartbeat_ms=protocol.HEARTBEAT_INTERVAL_MS, liveness=protocol.HEARTBEAT_LIVENESS,
                 credit=1, reconnect_ms=1000, curve=None):
        if heartbeat_ms <= 0 or liveness < 1 or credit < 1 or reconnect_ms < 0:
            raise ValueError(f"need heartbeat_ms > 0, liveness >= 1, credit >= 1 and "
                             f"reconnect_ms >= 0; got {heartbeat_ms}, {liveness}, {credit}, "
                             f"{reconnect_ms}")
        self.endpoint = endpoint
        self.heartbeat = heartbeat_ms / 1000
        self.liveness = liveness
        self.credit = credit
        self.reconnect_delay = reconnect_ms / 1000
        self._curve = curve
        self._registrations = []
        self._stop = threading.Event()
        self._started = False
        self._thread = None
        self._io_error = None
        self._stats = dict(served=0, failed=0, reconnects=0, malformed=0, dropped_replies=0)

    # -- public API -------------------------------------------------------------------------

    def handle(self, service, handler=None, *, raw=False):
        """Registers `handler` for `service`; without `handler`, a decorator that does."""
        if handler is None:
            return lambda fn: self.handle(service, fn, raw=raw) or fn
        if self._started:
            raise RuntimeError(f"Worker.handle({service!r}) after run() started")
        if not service or service.startswith(protocol.MMI_PREFIX):
            raise ValueError(f"service name {service!r}: must be non-empty and not mmi.*")
        if any(r.service == service for r in self._registrations):
            raise ValueError(f"service {service!r} is already registered")
        self._registrations.append(_Registration(service, handler, raw))
        return None

    def run(self):
        """Serves until stop(): then finishes the request in hand, replies, sends DISCONNECT on
        every service socket and returns. Raises what stopped the I/O thread, if anything did."""
        if not self._registrations:
            raise RuntimeError("Worker.run() with no service: call handle() first")
        if self._started:
            raise RuntimeError("Worker.run() called a second time")
        self._started = True
        context = zmq.Context()
        pipe = context.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.sndhwm = pipe.rcvhwm = 0  # credit bounds what is in it; never block either thread
        pipe.bind(_PIPE)
        io_thread = threading.Thread(target=self._io_main, args=(context,),
                                     name="zbroker-worker-io", daemon=True)
        io_thread.start()
        try:
            while not self._stop.is_set() and io_thread.is_alive():
                if pipe.poll(_POLL_MS):
                    pipe.send_multipart(self._serve(pipe.recv_multipart()))
        finally:
            self._stop.set()
            if io_thread.is_alive():
                pipe.send_multipart(_STOP)
            io_thread.join()
            pipe.close()
            context.term()
        if self._io_error is not None:
            raise self._io_error

    def start(self):
        """run() in a background thread; returns self. stop() then waits for it."""
        self._thread = threading.Thread(target=self.run, name="zbroker-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10.0):
        """Asks run() to return. Safe from any thread and from a signal handler; when the worker
        was start()ed, also waits up to `timeout` seconds for it to finish."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def stats(self):
        """Counts so far: served, failed (the handler raised), reconnects, malformed (broker
        messages ignored), dropped_replies (for a connection replaced meanwhile)."""
        return dict(self._stats)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- handler thread ---------------------------------------------------------------------

    def _serve(self, job):
        slot, connection_id, token, *body = job
        registration = self._registrations[int.from_bytes(slot, "little")]
        try:
            if registration.raw:
                result = registration.handler(body)
                reply = [bytes(result)] if isinstance(result, (bytes, bytearray, memoryview)) \
                    else [bytes(part) for part in result]
            else:
                reply = [pack(registration.handler(unpack(body[0]) if body else None))]
            self._stats["served"] += 1
        except Exception as e:  # any failure of user code is the client's answer, not ours
            self._stats["failed"] += 1
            message = f"{type(e).__name__}: {e}"
            log.warning("handler for %r failed: %s", registration.service, message)
            reply = [pack({"error": message})]
        return [slot, connection_id, token, *reply]

    # -- I/O thread -------------------------------------------------------------------------

    def _io_main(self, context):
        try:
            self._io_loop(context)
        except Exception as e:
            log.error("worker I/O thread stopped: %s", e)
            self._io_error = e

    def _io_loop(self, context):
        pipe = context.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.sndhwm = pipe.rcvhwm = 0
        pipe.connect(_PIPE)
        poller = zmq.Poller()
        poller.register(pipe, zmq.POLLIN)
        connections = []
        for slot, registration in enumerate(self._registrations):
            ready = [b"", protocol.MDP_WORKER, protocol.READY, registration.service.encode()]
            if self.credit != 1:
                ready.append(str(self.credit).encode())
            connections.append(_Connection(slot, registration.service, ready))
        next_id = 1
        try:
            now = time.monotonic()
            for connection in connections:
                self._connect(context, poller, connection, next_id, now)
                next_id += 1
            while True:
                now = time.monotonic()
                timers = [c.reconnect_at if c.socket is None else min(c.heartbeat_at, c.expires_at)
                          for c in connections]
                wait_ms = max(0, min(_POLL_MS, int((min(timers) - now) * 1000) + 1))
                events = dict(poller.poll(wait_ms))
                if pipe in events and self._read_results(pipe, connections):
                    return
                for connection in connections:
                    if connection.socket is not None and connection.socket in events:
                        self._read_broker(connection, pipe, poller)
                now = time.monotonic()
                for connection in connections:
                    if connection.socket is None:
                        if now >= connection.reconnect_at and not self._stop.is_set():
                            self._stats["reconnects"] += 1
                            self._connect(context, poller, connection, next_id, now)
                            next_id += 1
                    elif now >= connection.expires_at:
                        log.warning("broker silent for %d ms on %r: reconnecting in %d ms",
                                    self.heartbeat * self.liveness * 1000, connection.service,
                                    self.reconnect_delay * 1000)
                        self._drop(poller, connection, now)
                    elif now >= connection.heartbeat_at:
                        self._send(connection, [b"", protocol.MDP_WORKER, protocol.HEARTBEAT])
                        connection.heartbeat_at = now + self.heartbeat
        finally:
            for connection in connections:
                if connection.socket is not None:
                    self._send(connection, [b"", protocol.MDP_WORKER, protocol.DISCONNECT])
                    connection.socket.close(linger=_DISCONNECT_LINGER_MS)
                    connection.socket = None
            pipe.close()

    def _connect(self, context, poller, connection, connection_id, now):
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        if self._curve is not None:
            self._curve.apply(socket)
        socket.connect(self.endpoint)
        connection.socket = socket
        connection.id = connection_id
        connection.heartbeat_at = now + self.heartbeat
        connection.expires_at = now + self.heartbeat * self.liveness
        poller.register(socket, zmq.POLLIN)
        self._send(connection, connection.ready)  # queued until the TCP connection is up
        log.debug("sent READY for %r to %s", connection.service, self.endpoint)

    def _drop(self, poller, connection, now):
        poller.unregister(connection.socket)
        connection.socket.close(linger=0)
        connection.socket = None
        connection.reconnect_at = now + self.reconnect_delay

    def _send(self, connection, frames):
        # Never block the I/O thread: the other services' heartbeats depend on it.
        try:
            connection.socket.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            log.warning("dropping a message for %r: the queue to the broker is full",
                        connection.service)
            return False

    def _read_broker(self, connection, pipe, poller):
        for _ in range(_READ_BATCH):
            if connection.socket is None:  # a DISCONNECT closed it
                return
            try:
                frames = connection.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            connection.expires_at = now + self.heartbeat * self.liveness
            if len(frames) < 3 or frames[0] != b"" or frames[1] != protocol.MDP_WORKER:
                self._malformed(connection, frames)
                continue
            command = frames[2]
            if command == protocol.REQUEST:
                if len(frames) < 5 or frames[4] != b"":
                    self._malformed(connection, frames)
                elif not self._stop.is_set():
                    # When stopping, not started: the broker re-queues it on our DISCONNECT.
                    pipe.send_multipart([connection.slot.to_bytes(4, "little"),
                                         connection.id.to_bytes(8, "little"), frames[3],
                                         *frames[5:]])
            elif command == protocol.DISCONNECT:
                log.warning("broker sent DISCONNECT on %r: reconnecting in %d ms",
                            connection.service, self.reconnect_delay * 1000)
                self._drop(poller, connection, now)
            elif command != protocol.HEARTBEAT:
                self._malformed(connection, frames)

    def _malformed(self, connection, frames):
        self._stats["malformed"] += 1
        log.warning("ignoring a malformed message from the broker on %r: %r", connection.service,
                    frames[:4])

    def _read_results(self, pipe, connections):
        """Sends the handler thread's replies; True once it said stop."""
        for _ in range(_READ_BATCH):
            try:
                frames = pipe.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            if frames == _STOP:
                return True
            slot, connection_id, token, *reply = frames
            connection = connections[int.from_bytes(slot, "little")]
            if connection.socket is None or connection.id != int.from_bytes(connection_id,
                                                                            "little"):
                # The broker has given this request to another worker already, or will.
                self._stats["dropped_replies"] += 1
                log.info("dropping a reply for %r: its connection to the broker was replaced",
                         connection.service)
                continue
            self._send(connection, [b"", protocol.MDP_WORKER, protocol.REPLY, token, b"",
                                    *(reply or [b""])])
        return False
