"""ZB/1 client: synchronous calls with Lazy Pirate retries, and a pipelined window of requests;
to one broker, or to several with failover."""
import collections
import itertools
import logging
import os
import time
from typing import Any, List, NamedTuple

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .errors import HandlerError, Timeout, ZbrokerError, error_for_status

log = logging.getLogger("zbroker.client")

_MAX_BACKOFF = 5.0
# With several brokers each connection has libzmq heartbeats, so a broker that vanishes without
# closing its TCP connection (host down, network cut) is noticed as a disconnect within the
# broker's own liveness period, not only by a request's timeout.
_HEARTBEAT_IVL_MS = protocol.HEARTBEAT_INTERVAL_MS
_HEARTBEAT_TIMEOUT_MS = protocol.HEARTBEAT_INTERVAL_MS * protocol.HEARTBEAT_LIVENESS
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
# Messages read from one broker in one go: then the others get their turn, and the caller its
# clock, however fast one of them sends.
_READ_BATCH = 64
# Monitor endpoints must be unique in a context; pyzmq's default names them after the socket's
# file descriptor, which a socket opened right after one is closed may get again.
_monitor_ids = itertools.count(1)


class Response(NamedTuple):
    """What came back for one request: the broker's status and, for 200, the reply frames."""

    status: int
    frames: List[bytes]

    @property
    def ok(self):
        return self.status == protocol.OK


class Result(NamedTuple):
    """One answer of a pipeline: the status and, for 200, the reply (decoded unless raw)."""

    status: int
    reply: Any

    @property
    def ok(self):
        """200 and not a handler's {"error": ...} map."""
        return self.status == protocol.OK and error_message(self.reply) is None

    @property
    def error(self):
        """The handler's error message when the reply is {"error": message}, else None."""
        return error_message(self.reply) if self.status == protocol.OK else None


def error_message(reply):
    """The message of a handler's {"error": message} reply (what a failing handler answers)."""
    if isinstance(reply, dict) and len(reply) == 1 and "error" in reply:
        return reply["error"]
    return None


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _unpack_figures(data, service):
    """An mmi.services or mmi.stats answer. Names need not be UTF-8 (any peer's bytes): those
    that are not get U+FFFD in place of what does not decode, as `zclient stats --json` prints
    them, so that printing or dumping the map as JSON never fails on a hostile name."""
    try:
        figures = msgpack.unpackb(data, raw=False, strict_map_key=False,
                                  unicode_errors="replace")
    except (ValueError, msgpack.UnpackException) as e:  # not msgpack, or cut short
        figures = e
    if not isinstance(figures, dict):
        raise ZbrokerError(f"the answer to {service} is not a msgpack map ({figures!r:.100}): "
                           f"is that a zbroker?", status=protocol.OK, service=service)
    return figures


def reply_grace(timeout):
    """The broker answers 503/504 exactly at the deadline we send, which is our timeout; so an
    attempt listens a little longer (a quarter of it, 50 to 500 ms) for that answer."""
    return min(max(timeout / 4, 0.05), 0.5)


def endpoint_list(endpoint):
    """The broker endpoints `endpoint` names: a str (several separated by commas, as in
    "tcp://a:5555,tcp://b:5555") or a list of str. ValueError when it names none, an empty one
    or one twice."""
    if isinstance(endpoint, str):
        endpoints = [part.strip() for part in endpoint.split(",")]
    else:
        endpoints = [str(part).strip() for part in endpoint]
    if not endpoints or not all(endpoints):
        raise ValueError(f"no broker endpoint, or an empty one, in {endpoint!r}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"a broker endpoint given twice in {endpoint!r}")
    return endpoints


def _frames_of(body):
    frames = protocol.body_frames(body)
    if not frames:
        raise ValueError("a request needs at least one body frame (b'' is one)")
    return frames


def _options(priority, fairness_key, idempotency_key=None):
    """A request's options, checked (ValueError) before anything is sent."""
    return {"priority": protocol.check_priority(priority),
            "fairness_key": protocol.check_fairness_key(fairness_key),
            "idempotency_key": protocol.check_idempotency_key(idempotency_key)}


def _key_function(idempotency_key):
    """pipeline()'s idempotency_key: None, or a function of a payload that returns its key."""
    if idempotency_key is None or callable(idempotency_key):
        return idempotency_key
    # One key for every request would make a worker run the first and answer the others with
    # its reply.
    raise ValueError(f"pipeline() takes idempotency_key as a function of each payload that "
                     f"returns its key, not {type(idempotency_key).__name__}")


def _too_many_frames(frames):
    """A body ZB/1 cannot carry: the broker answers 413 to one of more frames from other peers."""
    if len(frames) <= protocol.MAX_BODY_FRAMES:
        return False
    log.debug("refusing a request of %d body frames: the broker would answer 413", len(frames))
    return True


class _Broker:
    """One broker: its DEALER and, with several brokers, the monitor that says whether it is up."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.socket = None
        self.monitor = None  # a PAIR of CONNECTED and DISCONNECTED events; None for one broker
        self.up = False  # requests may go to it: always for one broker, else while connected
        self.draining = False  # it answered 503 "draining": avoided until its connection drops


class _Flight:
    """A pipelined request until its answer: enough to send it again, unchanged (same id, same
    idempotency key), to another broker."""

    __slots__ = ("index", "id", "body", "key", "broker", "give_up", "refused")

    def __init__(self, index, request_id, body, key):
        self.index = index  # in the input
        self.id = request_id
        self.body = body
        self.key = key
        self.broker = None  # where it was sent; None while it waits for a broker to take it
        self.give_up = 0.0
        self.refused = None  # a draining broker's 503, the answer should no other take it


class Client:
    """A ZB/1 client of one broker, or of several. `call()` sends msgpack and returns the
    decoded reply, raising a ZbrokerError subclass for any other status; `call_raw()` does the
    same with bytes; `request()` returns the status instead of raising; `pipeline()` keeps a
    window of requests in flight.

    Lazy Pirate (zguide ch. 4): an attempt that gets no answer within `timeout` (seconds) is
    retried under a new request id, up to `retries` times, waiting `backoff` seconds (doubling,
    at most 5 s) in between. Statuses such as 503 or 504 are answers: never retried. Not
    thread-safe: one per thread.

    `endpoint` is one broker, or several: a list, or one string with commas
    ("tcp://a:5555,tcp://b:5555"). With one broker, a silent attempt closes the socket and
    opens a new one, so nothing of it lingers. With several, the client keeps one socket per
    broker and watches each connection (libzmq heartbeats, every 2.5 s, 7.5 s of silence is a
    drop): requests go round robin to the brokers that are connected, and wait (within their
    timeout) for one when none is. A request whose broker drops, or answers that it is draining
    (503 "draining"), goes at once to another one, under the same id and idempotency key; the
    draining broker gets nothing more until its connection drops and comes back. A retry after
    silence goes to the next broker. Each sending of a request waits `timeout` (plus a grace)
    for its answer. `services()` and `stats()` ask one of the brokers.

    Delivery is at least once: a request whose broker dies after handing it to a worker runs
    again through another broker, and the answer is one of the two. Give it an
    `idempotency_key` and a worker that has just answered that key (the same worker, within its
    recent window) sends that reply again instead of running it twice.

    Every request method also takes, keyword-only, `priority`, `fairness_key` and
    `idempotency_key`, sent with each request (None, the default, sends none):

    - `priority`: an int from 0 (the default, lowest) to 9. Under the broker's default
      `--queue-policy priority`, a service's waiting requests of higher priority go to its
      workers first (the lowest waiting level still gets a turn now and then); other policies
      ignore it.
    - `fairness_key`: a str (UTF-8) or bytes of 1 to 255 bytes naming the tenant the request
      belongs to. The broker shares a service fairly between tenants, not between requests, so
      one that floods it cannot starve the others; without a key the tenant is this client's
      connection. Requests from many connections can share one key, and one connection can use
      several.
    - `idempotency_key`: a str (UTF-8) or bytes of 1 to 255 bytes naming this request apart from
      every other (an order id, a UUID); pipeline() takes a function of each payload instead.

    A priority or key outside these bounds, or a service name over 255 bytes (UTF-8), raises
    ValueError, before anything is sent.
    """

    def __init__(self, endpoint=protocol.DEFAULT_BROKER, *, timeout=2.5, retries=2, backoff=0.1,
                 curve=None, context=None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self.endpoints = endpoint_list(endpoint)
        self.endpoint = ",".join(self.endpoints)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._curve = curve
        self._context = context or zmq.Context.instance()
        self._several = len(self.endpoints) > 1
        self._brokers = [_Broker(e) for e in self.endpoints]
        self._turn = 0  # the broker the round robin tries first
        self._closed = False
        for broker in self._brokers:
            self._open(broker)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for broker in self._brokers:
            self._close(broker)
        self._closed = True

    def call(self, service, payload=None, *, timeout=None, deadline_ms=None, retries=None,
             priority=None, fairness_key=None, idempotency_key=None):
        """Sends `payload` as msgpack and returns the decoded reply. Raises HandlerError when the
        handler answered {"error": ...}, Timeout when nothing came back, and for other statuses
        the ZbrokerError subclass named after them (Unavailable for 503, ...).

        `priority` (0 to 9, higher first in the service's queue under the broker's default
        --queue-policy priority), `fairness_key` (the tenant whose requests share the service
        fairly with others'; default this connection) and `idempotency_key` (lets a worker
        answer a resent request without running it again): see the class docstring."""
        frames = self.call_raw(service, pack(payload), timeout=timeout, deadline_ms=deadline_ms,
                               retries=retries, priority=priority, fairness_key=fairness_key,
                               idempotency_key=idempotency_key)
        if not frames or frames == [b""]:  # no body: ZB/1 writes it as an empty one
            return None
        try:
            reply = unpack(frames[0])
        except ValueError as e:
            raise ZbrokerError(f"service {service!r} answered {len(frames[0])} bytes that are not "
                               f"msgpack ({e}); use call_raw() for raw bytes",
                               status=protocol.OK, service=service) from e
        message = error_message(reply)
        if message is not None:
            raise HandlerError(f"service {service!r} failed: {message}", service=service)
        return reply

    def call_raw(self, service, body, *, timeout=None, deadline_ms=None, retries=None,
                 priority=None, fairness_key=None, idempotency_key=None):
        """Sends `body` (bytes, or a list of frames) as it is; returns the reply frames.
        Raises like call(), except that an {"error": ...} reply is returned, not decoded.
        `priority`, `fairness_key` and `idempotency_key` as for call()."""
        response = self.request(service, body, timeout=timeout, deadline_ms=deadline_ms,
                                retries=retries, priority=priority, fairness_key=fairness_key,
                                idempotency_key=idempotency_key)
        if response.status == protocol.NO_REPLY:
            raise Timeout(f"no reply from {self.endpoint} for {service!r} after "
                          f"{1 + max(self._retries(retries), 0)} attempt(s) of "
                          f"{self._timeout(timeout)} s: is zbroker running there?",
                          service=service)
        if not response.ok:
            raise error_for_status(response.status, service)
        return response.frames

    def request(self, service, body, *, timeout=None, deadline_ms=None, retries=None,
                priority=None, fairness_key=None, idempotency_key=None):
        """The Response for `body` (bytes or frames), whatever its status; NO_REPLY (0) when
        every attempt went unanswered. `deadline_ms` defaults to the timeout; 0 sends none.
        `priority` (0 to 9, higher goes first), `fairness_key` (the tenant; default this
        connection) and `idempotency_key` go with every attempt, as for call()."""
        options = _options(priority, fairness_key, idempotency_key)
        timeout = self._timeout(timeout)
        attempts = 1 + max(self._retries(retries), 0)
        service = self._service(service)
        frames = _frames_of(body)
        deadline, refused = self._deadline(service, timeout, deadline_ms)
        if refused:
            return Response(protocol.BAD_REQUEST, [])
        if _too_many_frames(frames):
            return Response(protocol.TOO_LARGE, [])
        backoff = self.backoff
        for attempt in range(1, attempts + 1):
            response = self._attempt(service, deadline, frames, timeout, options)
            if response.status != protocol.NO_REPLY:
                return response
            log.debug("no reply from %s for %r within %s s (attempt %d of %d)", self.endpoint,
                      service, timeout, attempt, attempts)
            if not self._several:
                # A fresh socket, so a late answer to this attempt cannot be taken for the next
                # one's. (With several brokers the next attempt goes to the next broker, and a
                # late answer is told apart by its id.)
                self._reconnect(self._brokers[0])
            if attempt < attempts:
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        return response

    def pipeline(self, service, payloads, *, window=100, timeout=None, deadline_ms=None, raw=False,
                 priority=None, fairness_key=None, idempotency_key=None):
        """Yields a Result(status, reply) per payload, in input order, keeping at most `window`
        requests between the oldest unanswered and the newest sent. Nothing is retried: a
        request without an answer within `timeout` (plus a grace) yields status NO_REPLY (0).
        With several brokers, a request whose broker drops or says it is draining is sent again
        to another, as for request(); that is not a retry.
        With raw=True payloads are bytes (or frame lists) and replies frame lists.
        Every request carries `priority` and `fairness_key`, as for call(); a ValueError for
        them, or for a service name over 255 bytes, comes from the first next(), before
        anything is sent. `idempotency_key`, if given,
        is a function of a payload that returns that request's key (str or bytes of 1 to 255
        bytes, or None for none); a ValueError for a key it returns comes from the next() that
        would send that request.

        The requests that fit in the window at one time go out as one message per broker
        (several past protocol.BATCH_BYTES of envelope), and the broker batches its answers the
        same way."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window!r}")
        options = _options(priority, fairness_key)
        del options["idempotency_key"]  # each request's own, from key_of
        key_of = _key_function(idempotency_key)
        timeout = self._timeout(timeout)
        wait = timeout + reply_grace(timeout)
        service = self._service(service)
        deadline, refused = self._deadline(service, timeout, deadline_ms)
        payloads = iter(payloads)
        exhausted = False
        pending = {}  # request id -> _Flight, sent or waiting for a broker
        unsent = collections.deque()  # flights waiting for a broker: new, or to send again
        expiries = collections.deque()  # (give up at, request id), in time order
        answered = {}  # input index -> Result, until its turn to be yielded
        sent = yielded = 0
        silent = False  # a request went unanswered: its answer may still come

        def wait_for_a_broker(flight):
            flight.broker = None
            flight.give_up = time.monotonic() + wait
            expiries.append((flight.give_up, flight.id))
            unsent.append(flight)

        def flush(broker, writer, batch):
            nonlocal silent
            delivered = self._send(broker, writer.take(), wait)
            give_up = time.monotonic() + wait
            for flight in batch:
                if delivered:
                    flight.broker, flight.give_up = broker, give_up
                    expiries.append((give_up, flight.id))
                else:
                    del pending[flight.id]
                    answered[flight.index] = flight.refused or Result(protocol.NO_REPLY, None)
                    silent = True
            batch.clear()

        def take_answer(broker, record):
            flight = pending.get(record.id)
            if flight is None or flight.broker is not broker:
                log.debug("ignoring an answer to request %r, not awaited", record.id)
                return
            if self._refused_for_draining(broker, record):
                flight.refused = Result(record.status, None)
                wait_for_a_broker(flight)
                return
            del pending[record.id]
            answered[flight.index] = Result(record.status,
                                            self._decode(record.status, record.body, raw))

        def dispatch():
            """Sends the flights that wait, each to the next broker up: one message per
            broker."""
            writers = {}  # broker -> (Writer, flights in it)
            while unsent:
                if unsent[0].id not in pending:  # gave up on it while it waited
                    unsent.popleft()
                    continue
                broker = self._next_up()
                if broker is None:
                    break  # they wait for one to come up
                flight = unsent.popleft()
                writer, batch = writers.setdefault(broker, (protocol.Writer(), []))
                writer.request(flight.id, service, flight.body, deadline, **options,
                               idempotency_key=flight.key)
                batch.append(flight)
                if len(writer) >= protocol.BATCH_BYTES:
                    flush(broker, writer, batch)
            for broker, (writer, batch) in writers.items():
                if batch:
                    flush(broker, writer, batch)

        try:
            while True:
                while not exhausted and sent - yielded < window:
                    try:
                        payload = next(payloads)
                    except StopIteration:
                        exhausted = True
                        break
                    body = _frames_of(payload) if raw else [pack(payload)]
                    if refused:
                        answered[sent] = Result(protocol.BAD_REQUEST, None)
                    elif _too_many_frames(body):
                        answered[sent] = Result(protocol.TOO_LARGE, None)
                    else:
                        key = None if key_of is None else \
                            protocol.check_idempotency_key(key_of(payload))
                        flight = _Flight(sent, self._new_id(), body, key)
                        pending[flight.id] = flight
                        wait_for_a_broker(flight)
                    sent += 1
                dispatch()
                while yielded in answered:
                    yield answered.pop(yielded)
                    yielded += 1
                if exhausted and yielded == sent:
                    return
                if not exhausted and sent - yielded < window:
                    continue  # room to send more
                # Entries of flights answered, or sent again since, are stale.
                while expiries and (expiries[0][1] not in pending or
                                    pending[expiries[0][1]].give_up != expiries[0][0]):
                    expiries.popleft()
                give_up, oldest = expiries[0]
                left = give_up - time.monotonic()
                if left <= 0:
                    expiries.popleft()
                    flight = pending.pop(oldest)
                    if flight.refused is not None:
                        answered[flight.index] = flight.refused
                    elif flight.broker is None:  # no broker took it
                        answered[flight.index] = Result(self._untaken(), None)
                    else:
                        answered[flight.index] = Result(protocol.NO_REPLY, None)
                        silent = True
                    continue
                for broker in self._wait(left, take_answer):
                    lost = [flight for flight in pending.values() if flight.broker is broker]
                    if lost:
                        log.info("sending %d request(s) again, to another broker: the "
                                 "connection to %s dropped", len(lost), broker.endpoint)
                    for flight in lost:
                        wait_for_a_broker(flight)
        finally:
            # Answers still to come belong to nobody now: a new socket never sees them. (With
            # several brokers they are told apart by their id, and a new socket would have to
            # connect again before the next request.)
            if (pending or silent) and not self._several and not self._closed:
                self._reconnect(self._brokers[0])

    def services(self, timeout=None):
        """The broker's mmi.services map: {service: {workers, queued, in_flight, served, errors}}."""
        frames = self.call_raw(protocol.MMI_SERVICES, b"", timeout=timeout)
        return _unpack_figures(frames[0], protocol.MMI_SERVICES)

    def stats(self, timeout=None):
        """The broker's counters (mmi.stats), as `zclient stats --json` shows them. With CURVE
        on, only an admin key may read them: others get ZbrokerError with status 403."""
        frames = self.call_raw(protocol.MMI_STATS, b"", timeout=timeout)
        if frames == [protocol.MMI_FORBIDDEN]:
            raise ZbrokerError(f"{protocol.MMI_STATS} is forbidden (403): the broker needs an "
                               f"admin key for it", status=403, service=protocol.MMI_STATS)
        return _unpack_figures(frames[0], protocol.MMI_STATS)

    def has_service(self, service, timeout=None):
        """Whether the broker knows a worker for `service` now (8/MMI mmi.service)."""
        frames = self.call_raw(protocol.MMI_SERVICE, service.encode(), timeout=timeout)
        return frames == [protocol.MMI_FOUND]

    # -- internals --------------------------------------------------------------------------

    def _timeout(self, timeout):
        return self.timeout if timeout is None else timeout

    def _retries(self, retries):
        return self.retries if retries is None else retries

    def _service(self, service):
        """`service` as bytes; ValueError for a name ZB/1 cannot carry (over 255 bytes), which
        would otherwise wait for the workers of no service at all."""
        if self._closed:
            raise RuntimeError(f"this Client of {self.endpoint} is closed: make a new one")
        name = service.encode() if isinstance(service, str) else bytes(service)
        if len(name) > protocol.MAX_SERVICE_NAME_SIZE:
            raise ValueError(f"service name {name[:40]!r}... of {len(name)} bytes: at most "
                             f"{protocol.MAX_SERVICE_NAME_SIZE}")
        return name

    @staticmethod
    def _deadline(service, timeout, deadline_ms):
        """(deadline_ms to send or None, refused). Refused: a negative deadline_ms, which the
        broker would answer 400 and ZB/1 cannot even carry; answered 400 here, as the broker
        did when it went over ZBC01."""
        if deadline_ms is None:
            deadline_ms = max(1, int(timeout * 1000))
        deadline_ms = int(deadline_ms)
        if deadline_ms < 0:
            log.debug("refusing a request for %r (deadline_ms %d): the broker would answer 400",
                      service[:40], deadline_ms)
            return None, True
        # ZB/1 carries at most 2**32 - 1 ms (49.7 days); a longer deadline is cut to that.
        return (min(deadline_ms, protocol.MAX_U32) if deadline_ms else None), False

    @staticmethod
    def _new_id():
        """8 random bytes: a broker that saw some of our ids cannot guess the others, so cannot
        answer a request it was never sent (nor can whatever answers on a restarted broker's
        address). A system call costs far less than the rest of a request in Python."""
        return os.urandom(8)

    def _open(self, broker):
        socket = self._context.socket(zmq.DEALER)
        socket.linger = 0  # unsent or unanswered requests die with the socket
        if self._curve is not None:
            self._curve.apply(socket)
        if self._several:
            socket.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
            broker.monitor = socket.get_monitor_socket(
                _MONITOR_EVENTS, f"inproc://zbroker-client-monitor-{next(_monitor_ids)}")
        # One broker: requests go at once, the DEALER queues them while it connects. Several:
        # only to a broker whose connection is up, so none waits on a broker that is down.
        broker.up = not self._several
        broker.draining = False
        socket.connect(broker.endpoint)
        broker.socket = socket

    def _close(self, broker):
        if broker.monitor is not None:
            broker.socket.disable_monitor()
            broker.monitor.close(linger=0)
            broker.monitor = None
        if broker.socket is not None:
            broker.socket.close(linger=0)
            broker.socket = None
        broker.up = False

    def _reconnect(self, broker):
        self._close(broker)
        self._open(broker)

    def _next_up(self):
        """The next broker in the round robin that is up and not draining; None if none is."""
        count = len(self._brokers)
        for step in range(count):
            broker = self._brokers[(self._turn + step) % count]
            if broker.up and not broker.draining:
                self._turn = (self._turn + step + 1) % count
                return broker
        return None

    def _send(self, broker, frames, wait):
        # A DEALER queues while it connects; sending only blocks when that queue is full.
        broker.socket.sndtimeo = max(1, int(wait * 1000))
        try:
            broker.socket.send_multipart(frames)
            return True
        except zmq.Again:
            log.debug("could not queue a request to %s within %s s", broker.endpoint, wait)
            return False

    def _wait(self, seconds, take_answer):
        """Waits up to `seconds` for answers or, with several brokers, for a connection to come
        up or drop. Hands each ANSWER record to take_answer(broker, record) as it is read, so
        that nothing is kept of answers nobody awaits, and returns by `seconds` however many
        arrive. Returns the brokers whose connection dropped. A dropped broker has a new socket
        already, so nothing sent before comes back to it: what it held must go elsewhere."""
        until = time.monotonic() + seconds
        poller = zmq.Poller()
        for broker in self._brokers:
            poller.register(broker.socket, zmq.POLLIN)
            if broker.monitor is not None:
                poller.register(broker.monitor, zmq.POLLIN)
        ready = dict(poller.poll(max(1, int(seconds * 1000))))
        dropped = []
        for broker in self._brokers:
            lost = broker.monitor in ready and self._watch(broker)
            # Also when it dropped: answers that came before it did are answers, and all of them
            # are read before its socket is replaced.
            if broker.socket in ready or lost:
                self._read(broker, take_answer, until, None if lost else _READ_BATCH)
            if lost:
                log.info("connection to broker %s dropped: reconnecting", broker.endpoint)
                self._reconnect(broker)
                dropped.append(broker)
        return dropped

    def _watch(self, broker):
        """Reads the broker's connection events: it is up from CONNECTED on. True on
        DISCONNECTED."""
        while True:
            try:
                event = recv_monitor_message(broker.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return False
            if event["event"] == zmq.EVENT_CONNECTED:
                log.debug("connected to broker %s", broker.endpoint)
                broker.up = True
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                return True

    def _read(self, broker, take_answer, until, most):
        """Hands take_answer the ANSWER records of the messages the broker's socket holds now:
        of `most` of them at most (None: no limit), and of none read after `until`."""
        read = 0
        while most is None or read < most:
            try:
                message = broker.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for record in self._answers(broker, message):
                take_answer(broker, record)
            read += 1
            if time.monotonic() >= until:
                return

    def _refused_for_draining(self, broker, record):
        """Whether `record` is a draining broker's 503 that another broker may answer instead.
        That broker then gets nothing more until its connection drops and comes back: it is
        going away."""
        if not self._several or not protocol.is_draining(record.status, record.body):
            return False
        if not broker.draining:
            log.info("broker %s is draining: sending its requests to the others",
                     broker.endpoint)
            broker.draining = True
        return True

    def _untaken(self):
        """What a request that no broker took in time gets: 503, as a draining broker would
        answer, when the only brokers up are draining; else NO_REPLY."""
        if any(broker.up and broker.draining for broker in self._brokers):
            return protocol.UNAVAILABLE
        return protocol.NO_REPLY

    def _attempt(self, service, deadline, body, timeout, options):
        request_id = self._new_id()
        writer = protocol.Writer()
        writer.request(request_id, service, body, deadline, **options)
        message = writer.take()
        wait = timeout + reply_grace(timeout)
        give_up = time.monotonic() + wait  # waiting for a broker to come up counts too
        at = None  # the broker that has the request; None until one takes it
        sent = False
        refused = None  # a draining broker's 503: the answer, should no other take it in time
        answer = None

        def take_answer(broker, record):
            nonlocal answer, refused, at
            if answer is not None or record.id != request_id or broker is not at:
                log.debug("ignoring an answer to request %r, no longer awaited", record.id)
            elif self._refused_for_draining(broker, record):
                refused, at = Response(record.status, []), None
            else:
                answer = Response(record.status,
                                  record.body if record.status == protocol.OK else [])

        while True:
            if at is None:
                at = self._next_up()
                if at is not None:
                    if sent:  # sent again: it waits its full time on its new broker
                        give_up = time.monotonic() + wait
                    if not self._send(at, message, timeout):
                        return Response(protocol.NO_REPLY, [])
                    sent = True
            left = give_up - time.monotonic()
            if left <= 0:
                if refused is not None:
                    return refused
                return Response(self._untaken() if at is None else protocol.NO_REPLY, [])
            dropped = self._wait(left, take_answer)
            if answer is not None:
                return answer
            if at in dropped:
                log.info("sending request %r again, to another broker: the connection to %s "
                         "dropped", request_id, at.endpoint)
                at = None

    def _answers(self, broker, message):
        """The ANSWER records of a message from the broker; none when it is malformed (it is
        then ignored whole, as the broker does with ours)."""
        try:
            records = protocol.decode(message)
        except protocol.MalformedMessage as e:
            log.warning("ignoring a malformed message from %s (%s): %r", broker.endpoint, e,
                        [bytes(frame[:64]) for frame in message[:4]])
            return []
        if any(record.command != protocol.Command.ANSWER for record in records):
            log.warning("ignoring a message from %s with records other than ANSWER: %s",
                        broker.endpoint, [record.command.name for record in records])
            return []
        return records

    @staticmethod
    def _decode(status, body, raw):
        if status != protocol.OK:
            return None
        if raw:
            return body
        return unpack(body[0]) if body and body[0] else None
