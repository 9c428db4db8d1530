"""Majordomo worker over ZB/1: handlers per service; an I/O thread owns the sockets and heartbeats.

Threads: run() calls the handlers in the caller's thread; a background I/O thread owns one
DEALER per service (each one worker session), sends READY and HEARTBEAT, watches the broker's
liveness and reconnects. ZeroMQ sockets are not thread-safe, so jobs and replies cross
between the two over an inproc PAIR, the only socket both threads touch (each its own end).

Stopping (docs/protocol.md, "Native protocol: ZB/1"): the I/O thread says CREDIT 0 on every
session at once, runs every job the broker sent before it read that, waits for the broker's
CREDIT echo (after it no job is on its way; a broker that never echoes is waited for one
liveness period), and only then says DISCONNECT: a rolling restart costs no request an attempt.
"""
import logging
import threading
import time

import zmq

from . import protocol
from .client import pack, unpack

log = logging.getLogger("zbroker.worker")

_POLL_MS = 100  # bounds every wait, so stop() is noticed promptly
_DISCONNECT_LINGER_MS = 1000  # lets DISCONNECT reach the broker without hanging the close
_PIPE = "inproc://zbroker-worker-jobs"  # each Worker has its own context: no collisions
_DONE = [b"done"]  # I/O thread to handler thread: every reply is sent, DISCONNECT said
_READ_BATCH = 64


class _Registration:
    def __init__(self, service, handler, raw):
        self.service = service
        self.handler = handler
        self.raw = raw


class _Connection:
    """One service's DEALER to the broker: its heartbeat and liveness timers, and the records
    (replies, heartbeats) to send at the end of the loop round, as one message."""

    def __init__(self, slot, service, credit):
        self.slot = slot
        self.service = service
        self.credit = credit
        self.socket = None
        self.id = 0  # a reply is sent only on the connection its job came in on
        self.heartbeat_at = self.expires_at = self.reconnect_at = 0.0
        self.stop_acknowledged = False  # the broker echoed our CREDIT 0
        self.pending = protocol.Writer()
        self.pending_replies = 0


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
        self._handlers_gone = threading.Event()
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
        if len(service.encode()) > protocol.MAX_SERVICE_NAME_SIZE:
            raise ValueError(f"service name {service[:40]!r}...: longer than "
                             f"{protocol.MAX_SERVICE_NAME_SIZE} bytes")
        if any(r.service == service for r in self._registrations):
            raise ValueError(f"service {service!r} is already registered")
        self._registrations.append(_Registration(service, handler, raw))
        return None

    def run(self):
        """Serves until stop(): then tells the broker to send nothing more, finishes every job
        it sent meanwhile, replies, sends DISCONNECT on every service socket and returns.
        Raises what stopped the I/O thread, if anything did."""
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
            # Until the I/O thread says it is done: after stop() it still sends jobs that the
            # broker sent before it read our CREDIT 0.
            while True:
                if pipe.poll(_POLL_MS):
                    job = pipe.recv_multipart()
                    if job == _DONE:
                        break
                    pipe.send_multipart(self._serve(job))
                elif not io_thread.is_alive():
                    break
        finally:
            self._stop.set()
            self._handlers_gone.set()  # should we leave early (an exception): nobody runs jobs
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
        """Asks run() to return: it says CREDIT 0 at once, finishes the jobs it holds, waits
        for the broker's echo (at most liveness x heartbeat_ms), then says DISCONNECT. Safe from
        any thread and from a signal handler; when the worker was start()ed, also waits up to
        `timeout` seconds for it to finish."""
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
                if len(reply) > protocol.MAX_BODY_FRAMES:
                    raise ValueError(f"a reply of {len(reply)} frames: ZB/1 carries at most "
                                     f"{protocol.MAX_BODY_FRAMES}")
            else:
                # No body (ZB/1 writes it as an empty one) is None, as a missing frame was.
                reply = [pack(registration.handler(unpack(body[0]) if body and body[0] else None))]
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
        connections = [_Connection(slot, registration.service, self.credit)
                       for slot, registration in enumerate(self._registrations)]
        liveness_span = self.heartbeat * self.liveness
        next_id = 1
        in_flight = 0  # jobs sent to the handler thread whose result is not read yet
        stopping_since = None
        try:
            now = time.monotonic()
            for connection in connections:
                self._connect(context, poller, connection, next_id, now)
                next_id += 1
            while True:
                now = time.monotonic()
                if stopping_since is None and self._stop.is_set():
                    stopping_since = now
                    self._stop_taking_work(connections, in_flight)
                if stopping_since is not None and self._stop_settled(
                        connections, now - stopping_since >= liveness_span) and (
                        in_flight == 0 or self._handlers_gone.is_set()):
                    return
                timers = [c.reconnect_at if c.socket is None else min(c.heartbeat_at, c.expires_at)
                          for c in connections if c.socket is not None or stopping_since is None]
                if stopping_since is not None and now < stopping_since + liveness_span:
                    timers.append(stopping_since + liveness_span)  # when we stop waiting for echoes
                wait_ms = _POLL_MS if not timers else \
                    max(0, min(_POLL_MS, int((min(timers) - now) * 1000) + 1))
                events = dict(poller.poll(wait_ms))
                if pipe in events:
                    in_flight -= self._read_results(pipe, connections)
                for connection in connections:
                    if connection.socket is not None and connection.socket in events:
                        in_flight += self._read_broker(connection, pipe, poller)
                for connection in connections:
                    self._flush(connection)  # this round's replies: one message per socket
                now = time.monotonic()
                for connection in connections:
                    if connection.socket is None:
                        if now >= connection.reconnect_at and stopping_since is None:
                            self._stats["reconnects"] += 1
                            self._connect(context, poller, connection, next_id, now)
                            next_id += 1
                    elif now >= connection.expires_at:
                        if stopping_since is None:
                            log.warning("broker silent for %d ms on %r: reconnecting in %d ms",
                                        liveness_span * 1000, connection.service,
                                        self.reconnect_delay * 1000)
                        else:
                            log.warning("broker silent for %d ms on %r while stopping",
                                        liveness_span * 1000, connection.service)
                        self._drop(poller, connection, now)
                    elif now >= connection.heartbeat_at:
                        connection.pending.heartbeat()
                        self._flush(connection)
                        # From now: after a stall, one heartbeat is enough.
                        connection.heartbeat_at = now + self.heartbeat
        finally:
            disconnected = 0
            for connection in connections:
                if connection.socket is not None:
                    connection.pending.disconnect()
                    disconnected += self._flush(connection)
                    connection.socket.close(linger=_DISCONNECT_LINGER_MS)
                    connection.socket = None
            if stopping_since is not None:
                log.info("stopped: sent DISCONNECT on %d of %d service socket(s)", disconnected,
                         len(connections))
            pipe.send_multipart(_DONE)
            pipe.close()

    def _stop_taking_work(self, connections, in_flight):
        # At once, not after the jobs in hand: every job the broker sent meanwhile would be
        # refused, and cost its request an attempt.
        for connection in connections:
            if connection.socket is not None:
                connection.pending.credit(0)
                self._flush(connection)
        log.info("stopping: told the broker to send nothing more; finishing %d job(s) in hand",
                 in_flight)

    @staticmethod
    def _stop_settled(connections, waited_long_enough):
        """Until the broker has echoed CREDIT 0, a job may still be on its way. A broker that
        never echoes (gone, or its queue to us full) is waited for one liveness period."""
        return waited_long_enough or all(c.socket is None or c.stop_acknowledged
                                         for c in connections)

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
        connection.stop_acknowledged = False
        connection.pending.clear()
        connection.pending_replies = 0
        poller.register(socket, zmq.POLLIN)
        connection.pending.ready(connection.service, connection.credit)
        self._flush(connection)  # queued until the TCP connection is up
        log.debug("sent READY for %r to %s", connection.service, self.endpoint)

    def _drop(self, poller, connection, now):
        poller.unregister(connection.socket)
        connection.socket.close(linger=0)
        connection.socket = None
        connection.pending.clear()
        connection.pending_replies = 0
        connection.reconnect_at = now + self.reconnect_delay

    def _flush(self, connection):
        """Sends the connection's pending records as one message; False when there was nothing
        to send or the queue to the broker is full (then they are dropped)."""
        if connection.socket is None or connection.pending.empty:
            return False
        replies, connection.pending_replies = connection.pending_replies, 0
        # Never block the I/O thread: the other services' heartbeats depend on it.
        try:
            connection.socket.send_multipart(connection.pending.take(), zmq.NOBLOCK)
            return True
        except zmq.Again:
            self._stats["dropped_replies"] += replies
            log.warning("dropping a message with %d reply(s) for %r: the queue to the broker "
                        "is full", replies, connection.service)
            return False

    def _read_broker(self, connection, pipe, poller):
        """Reads a batch of the broker's messages; returns how many jobs went to the handlers."""
        jobs = 0
        for _ in range(_READ_BATCH):
            if connection.socket is None:  # a DISCONNECT closed it
                break
            try:
                frames = connection.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.monotonic()
            connection.expires_at = now + self.heartbeat * self.liveness  # any message at all
            try:
                records = protocol.decode(frames)
            except protocol.MalformedMessage as e:
                # Nothing of it is acted on, not even its well-formed records.
                self._malformed(connection, str(e), frames)
                continue
            for record in records:
                if record.command == protocol.Command.JOB:
                    # Also while stopping: the broker sent it before it read our CREDIT 0, and
                    # refusing it would cost the request an attempt.
                    pipe.send_multipart([connection.slot.to_bytes(4, "little"),
                                         connection.id.to_bytes(8, "little"), record.token,
                                         *record.body])
                    jobs += 1
                elif record.command == protocol.Command.CREDIT:
                    if record.credit == 0:
                        connection.stop_acknowledged = True
                elif record.command == protocol.Command.DISCONNECT:
                    if self._stop.is_set():
                        log.info("broker sent DISCONNECT on %r while stopping",
                                 connection.service)
                    else:
                        log.warning("broker sent DISCONNECT on %r: reconnecting in %d ms",
                                    connection.service, self.reconnect_delay * 1000)
                    self._drop(poller, connection, now)
                    break  # the rest belongs to a session that is over
                elif record.command != protocol.Command.HEARTBEAT:
                    self._malformed(connection, f"a {record.command.name} record, which only "
                                    f"clients and workers send", frames)
        return jobs

    def _malformed(self, connection, why, frames):
        self._stats["malformed"] += 1
        log.warning("ignoring a malformed message from the broker on %r (%s): %r",
                    connection.service, why, [bytes(frame[:64]) for frame in frames[:4]])

    def _read_results(self, pipe, connections):
        """Adds the handler thread's replies to their connection's message; returns how many."""
        results = 0
        for _ in range(_READ_BATCH):
            try:
                frames = pipe.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            results += 1
            slot, connection_id, token, *reply = frames
            connection = connections[int.from_bytes(slot, "little")]
            if connection.socket is None or connection.id != int.from_bytes(connection_id,
                                                                            "little"):
                # The broker has given this job to another worker already, or will.
                self._stats["dropped_replies"] += 1
                log.info("dropping a reply for %r: its connection to the broker was replaced",
                         connection.service)
                continue
            connection.pending.reply(token, reply)
            connection.pending_replies += 1
            if len(connection.pending) >= protocol.BATCH_BYTES:
                self._flush(connection)
        return results
