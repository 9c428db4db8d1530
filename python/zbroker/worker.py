"""Majordomo worker over ZB/1: handlers per service; an I/O thread owns the sockets and heartbeats.

Threads: run() calls the handlers in the caller's thread; a background I/O thread owns one
DEALER per service and broker (each one worker session), sends READY and HEARTBEAT, watches the
broker's liveness and connection, and reconnects. ZeroMQ sockets are not thread-safe, so jobs
and replies cross between the two over an inproc PAIR, the only socket both threads touch (each
its own end).

Stopping (docs/protocol.md, "Native protocol: ZB/1"): the I/O thread says CREDIT 0 on every
session at once, runs every job the broker sent before it read that, waits for the broker's
CREDIT echo (after it no job is on its way; a broker that never echoes is waited for one
liveness period), and only then says DISCONNECT: a rolling restart costs no request an attempt.
"""
import collections
import itertools
import logging
import re
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .client import endpoint_list, pack, unpack

log = logging.getLogger("zbroker.worker")

_POLL_MS = 100  # bounds every wait, so stop() is noticed promptly
_DISCONNECT_LINGER_MS = 1000  # lets DISCONNECT reach the broker without hanging the close
_PIPE = "inproc://zbroker-worker-jobs"  # each Worker has its own context: no collisions
_DONE = [b"done"]  # I/O thread to handler thread: every reply is sent, DISCONNECT said
_READ_BATCH = 64
# A broker that sends more JOBs beyond credit than this within one window is broken or hostile:
# the session is ended, which hands the broker back every job it holds, and started again.
REFUSALS_TOLERATED = 32
REFUSAL_WINDOW = 10.0
_LOG_WINDOW = 10.0  # what a broker makes us log: one line per kind per window
_LOG_KINDS = 64  # kinds tracked per session; past it, they share one
_MAX_QUOTED = 200  # characters of a broker's message that a log line quotes
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
# Monitor endpoints must be unique in a context (see client.py).
_monitor_ids = itertools.count(1)


def credit_shares(credit, brokers):
    """A service's credit split over its brokers, as the C++ worker splits it: broker i
    (0-based) gets credit // brokers, plus one if i < credit % brokers, but at least 1. So the
    worker holds at most max(credit, brokers) requests of the service at once."""
    return [max(1, credit // brokers + (1 if i < credit % brokers else 0))
            for i in range(brokers)]


class _CreditInForce:
    """The most jobs a broker may rightly have sent one session. A lower credit binds the
    broker only from its echo of the CREDIT on (docs/protocol.md, the CREDIT echo rule), so
    until every CREDIT asked for is echoed, the largest of them and of the credit in force
    before them is allowed. Echoes come back in order, so counting them is enough."""

    def __init__(self, credit):
        self.most = self._last_asked = credit  # READY's credit: a new session
        self._unechoed = 0

    def asked(self, credit):
        self._unechoed += 1
        self.most = max(self.most, credit)
        self._last_asked = credit

    def echoed(self):
        if self._unechoed == 0:  # an echo of nothing: the broker's mistake
            return
        self._unechoed -= 1
        if self._unechoed == 0:
            self.most = self._last_asked


class _LogLimiter:
    """Rate limits log lines by kind, as shared/log_limiter.hpp does: the first line of a kind in
    each window is written, the rest are counted and told with the next line of that kind or,
    when none comes, by expire() at the window's end. At most `kinds` kinds at once."""

    OTHER_KINDS = "other kinds"

    def __init__(self, window=_LOG_WINDOW, kinds=_LOG_KINDS):
        self.window = window
        self.kinds = kinds
        self._entries = {}  # kind -> [window start, lines left out]

    def admit(self, kind, now):
        """None: leave the line out. Else how many of its kind were left out before it."""
        entry = self._entries.get(kind)
        if entry is None:
            if len(self._entries) + 1 >= self.kinds:
                kind = self.OTHER_KINDS
            entry = self._entries.get(kind)
            if entry is None:
                self._entries[kind] = [now, 0]
                return 0
        if now >= entry[0] + self.window:
            entry[0] = now
            left_out, entry[1] = entry[1], 0
            return left_out
        entry[1] += 1
        return None

    def expire(self, now):
        """Forgets the kinds whose window ended; returns (kind, left out) for those that left
        lines out."""
        untold = []
        for kind, (start, left_out) in list(self._entries.items()):
            if now >= start + self.window:
                del self._entries[kind]
                if left_out:
                    untold.append((kind, left_out))
        return untold

    def more_like_this(self, left_out):
        return f" ({left_out} more like this in the last {self.window:g} s)" if left_out else ""


def _quote(frames):
    """A broker's message as a log line may quote it: escaped by repr(), cut to _MAX_QUOTED."""
    text = repr([bytes(frame[:_MAX_QUOTED]) for frame in frames[:8]])
    if len(text) > _MAX_QUOTED or len(frames) > 8:
        text = f"{text[:_MAX_QUOTED]}... ({len(frames)} frame(s))"
    return text


class _Registration:
    def __init__(self, service, handler, raw):
        self.service = service
        self.handler = handler
        self.raw = raw


class _Connection:
    """One service's DEALER to one broker: its heartbeat and liveness timers, and the records
    (replies, heartbeats) to send at the end of the loop round, as one message."""

    def __init__(self, index, slot, service, endpoint, credit):
        self.index = index  # in the I/O thread's list: how a reply finds its way back
        self.slot = slot  # the registration (handler) it serves
        self.service = service
        self.endpoint = endpoint
        self.credit = credit
        self.socket = None
        self.monitor = None  # a PAIR of the socket's CONNECTED and DISCONNECTED events
        self.connected = False
        self.id = 0  # a reply is sent only on the connection its job came in on
        self.heartbeat_at = self.expires_at = self.reconnect_at = 0.0
        self.stop_acknowledged = False  # the broker echoed our CREDIT 0
        self.pending = protocol.Writer()
        self.pending_replies = 0
        self.credit_in_force = _CreditInForce(credit)
        self.held = 0  # jobs of this session taken and not yet replied
        self.refusals = 0  # JOBs beyond credit in the current window
        self.refusal_window_start = 0.0
        self.log_limiter = _LogLimiter()  # per session: one broker cannot hide another


class _RecentReplies:
    """One service's idempotency window: the replies of the last `size` requests that carried
    an idempotency key, by key; and the jobs that came with the key of a request still running,
    to be answered with its reply."""

    # A larger reply is not kept (as in the C++ worker): the window costs at most size x this.
    MAX_REPLY_BYTES = 64 * 1024

    def __init__(self, size):
        self.size = size
        self.replies = collections.OrderedDict()  # key -> reply frames, oldest first
        self.running = {}  # key -> [(connection index, connection id, token)] waiting for it

    def done(self, key, reply):
        """Keeps `reply` for `key`; returns the jobs that waited for it."""
        if sum(len(frame) for frame in reply) <= self.MAX_REPLY_BYTES:
            self.replies[key] = reply
            while len(self.replies) > self.size:
                self.replies.popitem(last=False)
        return self.running.pop(key, [])


class Worker:
    """Serves handlers for a broker, or several: `handle()` each service, then `run()` (blocks)
    or `start()` (a background thread) until `stop()`.

    A handler gets the request decoded from msgpack and returns a value to encode; with raw=True
    it gets the body frames and returns bytes or a list of frames. A handler that raises answers
    {"error": "Type: message"}, as the C++ worker does, and the worker keeps serving.

    `heartbeat_ms` and `liveness` must match the broker's --heartbeat-ms and --liveness: after
    liveness x heartbeat_ms of broker silence, or a DISCONNECT, the worker waits `reconnect_ms`
    and registers again. `credit` > 1 lets the broker send that many requests ahead; they are
    still handled one at a time, in order. `curve`: CurveKeys for a broker with CURVE on.
    A session whose connection drops registers again at once, on a new socket: a broker that
    restarts gets the worker back as soon as it listens.

    `endpoint` is one broker, or several (a list, or one string with commas): the worker then
    keeps a session per service with each, and splits each service's credit over them as the
    C++ worker does: broker i (0-based) of N gets credit // N, plus 1 if i < credit % N, but at
    least 1. So with several brokers a worker holds at most max(credit, N) requests of a
    service: credit 1 and 3 brokers is 1 each, 3 in all.

    Idempotency: a request may reach the worker twice, when a client sends it again through
    another broker after its own dropped. For each service the worker keeps the replies of the
    last `recent_replies` requests (default 10000; 0: none) that carried an idempotency key; a
    job whose key is among them is answered with that reply, not run again, and so is one
    whose key is running now, once it is done. Best effort: this worker only, within that
    window, and replies over 64 KiB are not kept; whatever the reply was, an {"error": ...}
    too. stats()["duplicates_skipped"] counts them.
    """

    def __init__(self, endpoint=protocol.DEFAULT_BROKER, *,
                 heartbeat_ms=protocol.HEARTBEAT_INTERVAL_MS, liveness=protocol.HEARTBEAT_LIVENESS,
                 credit=1, reconnect_ms=1000, curve=None, recent_replies=10000):
        if heartbeat_ms <= 0 or liveness < 1 or credit < 1 or reconnect_ms < 0 or \
                recent_replies < 0:
            raise ValueError(f"need heartbeat_ms > 0, liveness >= 1, credit >= 1, "
                             f"reconnect_ms >= 0 and recent_replies >= 0; got {heartbeat_ms}, "
                             f"{liveness}, {credit}, {reconnect_ms}, {recent_replies}")
        self.endpoints = endpoint_list(endpoint)
        self.endpoint = ",".join(self.endpoints)
        self.recent_replies = recent_replies
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
        self._stats = dict(served=0, failed=0, reconnects=0, malformed=0, dropped_replies=0,
                           duplicates_skipped=0, refused_jobs=0)
        self._windows = []  # a _RecentReplies per registration; the I/O thread's

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
        messages ignored), dropped_replies (for a connection replaced meanwhile),
        duplicates_skipped (jobs answered from the idempotency window, not run), refused_jobs
        (JOBs beyond the credit the broker was given: not run, not answered)."""
        return dict(self._stats)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- handler thread ---------------------------------------------------------------------

    def _serve(self, job):
        slot, connection, connection_id, token, key, *body = job
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
        return [slot, connection, connection_id, token, key, *reply]

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
        shares = credit_shares(self.credit, len(self.endpoints))
        for slot, registration in enumerate(self._registrations):
            for endpoint, credit in zip(self.endpoints, shares):
                connections.append(_Connection(len(connections), slot, registration.service,
                                               endpoint, credit))
        self._windows = [_RecentReplies(self.recent_replies) for _ in self._registrations]
        if self.credit < len(self.endpoints):
            log.warning("credit %d is less than the %d brokers it is split over: each broker "
                        "still gets 1, so up to %d requests may be held per service",
                        self.credit, len(self.endpoints), len(self.endpoints))
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
                if stopping_since is not None:
                    for connection in connections:  # an unread CONNECTED matters now
                        self._watch(connection, poller, now)
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
                    if connection.monitor is not None and connection.monitor in events:
                        self._watch(connection, poller, now)
                for connection in connections:
                    self._flush(connection)  # this round's replies: one message per socket
                now = time.monotonic()
                for connection in connections:
                    for kind, left_out in connection.log_limiter.expire(now):
                        log.warning("from broker %s on %r: %s%s", connection.endpoint,
                                    connection.service, kind,
                                    connection.log_limiter.more_like_this(left_out))
                    if connection.socket is None:
                        if now >= connection.reconnect_at and stopping_since is None:
                            self._stats["reconnects"] += 1
                            self._connect(context, poller, connection, next_id, now)
                            next_id += 1
                    elif now >= connection.expires_at:
                        if stopping_since is None:
                            log.warning("broker %s silent for %d ms on %r: reconnecting in %d ms",
                                        connection.endpoint, liveness_span * 1000,
                                        connection.service, self.reconnect_delay * 1000)
                        else:
                            log.warning("broker %s silent for %d ms on %r while stopping",
                                        connection.endpoint, liveness_span * 1000,
                                        connection.service)
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
                    self._close(connection, linger=_DISCONNECT_LINGER_MS)
            if stopping_since is not None:
                log.info("stopped: sent DISCONNECT on %d of %d session(s)", disconnected,
                         len(connections))
            pipe.send_multipart(_DONE)
            pipe.close()

    def _stop_taking_work(self, connections, in_flight):
        # At once, not after the jobs in hand: every job the broker sent meanwhile would be
        # refused, and cost its request an attempt.
        for connection in connections:
            if connection.socket is not None:
                connection.pending.credit(0)
                connection.credit_in_force.asked(0)
                self._flush(connection)
        log.info("stopping: told the broker to send nothing more; finishing %d job(s) in hand",
                 in_flight)

    @staticmethod
    def _stop_settled(connections, waited_long_enough):
        """Until the broker has echoed CREDIT 0, a job may still be on its way. A broker that
        never echoes (gone, or its queue to us full) is waited for one liveness period; one we
        are not connected to has nothing on its way."""
        return waited_long_enough or all(c.socket is None or not c.connected or
                                         c.stop_acknowledged for c in connections)

    def _connect(self, context, poller, connection, connection_id, now):
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        if self._curve is not None:
            self._curve.apply(socket)
        # Its events tell a dropped connection at once, so the session starts again on a new
        # socket rather than after liveness x heartbeat_ms of silence or the broker's DISCONNECT.
        connection.monitor = socket.get_monitor_socket(
            _MONITOR_EVENTS, f"inproc://zbroker-worker-monitor-{next(_monitor_ids)}")
        socket.connect(connection.endpoint)
        connection.socket = socket
        connection.connected = False
        connection.id = connection_id
        connection.heartbeat_at = now + self.heartbeat
        connection.expires_at = now + self.heartbeat * self.liveness
        connection.stop_acknowledged = False
        connection.pending.clear()
        connection.pending_replies = 0
        connection.credit_in_force = _CreditInForce(connection.credit)
        connection.held = 0
        connection.refusals = 0
        poller.register(socket, zmq.POLLIN)
        poller.register(connection.monitor, zmq.POLLIN)
        connection.pending.ready(connection.service, connection.credit)
        self._flush(connection)  # queued until the TCP connection is up
        log.debug("sent READY for %r with credit %d to %s", connection.service, connection.credit,
                  connection.endpoint)

    @staticmethod
    def _close(connection, linger=0):
        connection.socket.disable_monitor()
        connection.monitor.close(linger=0)
        connection.socket.close(linger=linger)
        connection.socket = connection.monitor = None
        connection.connected = False

    def _drop(self, poller, connection, now, linger=0):
        poller.unregister(connection.socket)
        poller.unregister(connection.monitor)
        self._close(connection, linger)
        connection.pending.clear()
        connection.pending_replies = 0
        connection.reconnect_at = now + self.reconnect_delay

    def _quit(self, poller, connection, now):
        """Ends the session on our side: DISCONNECT (lingering so it gets out), then a new
        session after reconnect_ms."""
        connection.pending.disconnect()
        self._flush(connection)
        self._drop(poller, connection, now, linger=_DISCONNECT_LINGER_MS)

    def _watch(self, connection, poller, now):
        """Reads the session's connection events. When it drops, the session is over (a broker
        that comes back sees a new peer): it starts again at once, on a new socket whose READY
        waits for the connection."""
        while connection.monitor is not None:
            try:
                event = recv_monitor_message(connection.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_CONNECTED:
                connection.connected = True
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                log.warning("connection to broker %s dropped on %r: registering again",
                            connection.endpoint, connection.service)
                self._drop(poller, connection, now)
                connection.reconnect_at = now

    def _flush(self, connection):
        """Sends the connection's pending records as one message; False when there was nothing
        to send or the queue to the broker is full (then they are dropped)."""
        if connection.socket is None or connection.pending.empty:
            return False
        replies, connection.pending_replies = connection.pending_replies, 0
        # Never block the I/O thread: the other sessions' heartbeats depend on it.
        try:
            connection.socket.send_multipart(connection.pending.take(), zmq.NOBLOCK)
            return True
        except zmq.Again:
            self._stats["dropped_replies"] += replies
            self._log_limited(connection, "replies dropped: the queue is full", time.monotonic(),
                              "dropping a message with %d reply(s) for %r to %s: the queue to "
                              "the broker is full", replies, connection.service,
                              connection.endpoint)
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
                self._malformed(connection, str(e), frames, now)
                continue
            # Jobs of this message answered at once: held until it is read, as the broker sent
            # them together and counts them all until it reads our replies.
            answered = 0
            for record in records:
                if connection.socket is None:  # DISCONNECT, or we left: the session is over
                    break
                if record.command == protocol.Command.JOB:
                    # Also while stopping, up to the credit in force until the broker's echo:
                    # it sent them before it read our CREDIT 0, and refusing them would cost
                    # their requests an attempt.
                    if connection.held >= connection.credit_in_force.most:
                        self._refuse(poller, connection, now)
                        continue
                    connection.held += 1
                    handled = self._answered_already(connection, record)
                    if handled == "answered":
                        answered += 1
                    if handled:
                        continue
                    pipe.send_multipart([connection.slot.to_bytes(4, "little"),
                                         connection.index.to_bytes(4, "little"),
                                         connection.id.to_bytes(8, "little"), record.token,
                                         record.idempotency_key, *record.body])
                    jobs += 1
                elif record.command == protocol.Command.CREDIT:
                    connection.credit_in_force.echoed()
                    if record.credit == 0:
                        connection.stop_acknowledged = True
                elif record.command == protocol.Command.DISCONNECT:
                    if self._stop.is_set():
                        log.info("broker %s sent DISCONNECT on %r while stopping",
                                 connection.endpoint, connection.service)
                    else:
                        log.warning("broker %s sent DISCONNECT on %r: reconnecting in %d ms",
                                    connection.endpoint, connection.service,
                                    self.reconnect_delay * 1000)
                    self._drop(poller, connection, now)
                elif record.command != protocol.Command.HEARTBEAT:
                    self._malformed(connection, f"a {record.command.name} record, which a "
                                    f"broker never sends a worker", frames, now)
            connection.held = max(0, connection.held - answered)
        return jobs

    def _refuse(self, poller, connection, now):
        """A JOB beyond the credit in force: not run, and not answered, since a REPLY would
        reach its client as a success and free the credit at once (docs/protocol.md). A broker
        that keeps at it is left."""
        self._stats["refused_jobs"] += 1
        if now >= connection.refusal_window_start + REFUSAL_WINDOW:
            connection.refusal_window_start = now
            connection.refusals = 0
        connection.refusals += 1
        if connection.refusals <= REFUSALS_TOLERATED:
            self._log_limited(connection, "JOB beyond credit", now,
                              "refusing a JOB from broker %s on %r: the session holds %d, all "
                              "the credit the broker was given", connection.endpoint,
                              connection.service, connection.held)
            return
        self._log_limited(connection, "leaving a broker that sends JOBs beyond credit", now,
                          "broker %s sent more than %d JOBs beyond credit on %r within %g s: "
                          "disconnecting, reconnecting in %d ms", connection.endpoint,
                          REFUSALS_TOLERATED, connection.service, REFUSAL_WINDOW,
                          self.reconnect_delay * 1000)
        self._quit(poller, connection, now)

    @staticmethod
    def _log_limited(connection, kind, now, message, *args):
        left_out = connection.log_limiter.admit(kind, now)
        if left_out is not None:
            log.warning(message + "%s", *args, connection.log_limiter.more_like_this(left_out))

    def _answered_already(self, connection, job):
        """Whether the idempotency window takes care of `job`: "answered" when its key was
        answered lately (that reply goes now), "waiting" when its key is still running (it gets
        that reply when it is done), else None: the key (if any) is marked running, and the job
        is for the handler."""
        key = job.idempotency_key
        window = self._windows[connection.slot]
        if not key or window.size == 0:
            return None
        if key in window.replies:
            self._stats["duplicates_skipped"] += 1
            log.debug("answering a job for %r with key %r from the replies kept",
                      connection.service, key)
            connection.pending.reply(job.token, window.replies[key])
            connection.pending_replies += 1
            return "answered"
        if key in window.running:
            self._stats["duplicates_skipped"] += 1
            window.running[key].append((connection.index, connection.id, job.token))
            return "waiting"
        window.running[key] = []
        return None

    def _malformed(self, connection, why, frames, now):
        self._stats["malformed"] += 1
        # One kind whatever the numbers in it, so that a broker cannot invent kinds.
        kind = re.sub(r"0x[0-9a-f]+|\d+", "N", why)
        self._log_limited(connection, kind, now,
                          "ignoring a malformed message from broker %s on %r (%s): %s",
                          connection.endpoint, connection.service, why, _quote(frames))

    def _read_results(self, pipe, connections):
        """Adds the handler thread's replies to their connection's message; returns how many."""
        results = 0
        for _ in range(_READ_BATCH):
            try:
                frames = pipe.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            results += 1
            slot, index, connection_id, token, key, *reply = frames
            destinations = [(int.from_bytes(index, "little"),
                             int.from_bytes(connection_id, "little"), token)]
            if key:  # kept for a resend of the same request, and sent to those that came already
                destinations += self._windows[int.from_bytes(slot, "little")].done(key, reply)
            for index, connection_id, token in destinations:
                self._reply(connections[index], connection_id, token, reply)
        return results

    def _reply(self, connection, connection_id, token, reply):
        if connection.socket is None or connection.id != connection_id:
            # The broker has given this job to another worker already, or will.
            self._stats["dropped_replies"] += 1
            log.info("dropping a reply for %r: its connection to broker %s was replaced",
                     connection.service, connection.endpoint)
            return
        connection.held = max(0, connection.held - 1)
        connection.pending.reply(token, reply)
        connection.pending_replies += 1
        if len(connection.pending) >= protocol.BATCH_BYTES:
            self._flush(connection)
