"""ZB/1 client: synchronous calls with Lazy Pirate retries, and a pipelined window of requests."""
import collections
import logging
import struct
import time
from typing import Any, List, NamedTuple

import msgpack
import zmq

from . import protocol
from .errors import HandlerError, Timeout, ZbrokerError, error_for_status

log = logging.getLogger("zbroker.client")

_MAX_BACKOFF = 5.0


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


def reply_grace(timeout):
    """The broker answers 503/504 exactly at the deadline we send, which is our timeout; so an
    attempt listens a little longer (a quarter of it, 50 to 500 ms) for that answer."""
    return min(max(timeout / 4, 0.05), 0.5)


def _frames_of(body):
    frames = protocol.body_frames(body)
    if not frames:
        raise ValueError("a request needs at least one body frame (b'' is one)")
    return frames


def _options(priority, fairness_key):
    """A request's priority and fairness key, checked (ValueError) before anything is sent."""
    return {"priority": protocol.check_priority(priority),
            "fairness_key": protocol.check_fairness_key(fairness_key)}


def _too_many_frames(frames):
    """A body ZB/1 cannot carry: the broker answers 413 to one of more frames from other peers."""
    if len(frames) <= protocol.MAX_BODY_FRAMES:
        return False
    log.debug("refusing a request of %d body frames: the broker would answer 413", len(frames))
    return True


class Client:
    """A ZB/1 client on one DEALER socket. `call()` sends msgpack and returns the decoded
    reply, raising a ZbrokerError subclass for any other status; `call_raw()` does the same with
    bytes; `request()` returns the status instead of raising; `pipeline()` keeps a window of
    requests in flight.

    Lazy Pirate (zguide ch. 4): an attempt that gets no answer within `timeout` (seconds) closes
    the socket and opens a new one, so nothing of it lingers, then retries under a new request
    id, up to `retries` times, waiting `backoff` seconds (doubling, at most 5 s) in between.
    Statuses such as 503 or 504 are answers: never retried. Not thread-safe: one per thread.

    Every request method also takes, keyword-only, `priority` and `fairness_key`, sent with
    each request (None, the default, sends none):

    - `priority`: an int from 0 (the default, lowest) to 9. Under the broker's default
      `--queue-policy priority`, a service's waiting requests of higher priority go to its
      workers first (the lowest waiting level still gets a turn now and then); other policies
      ignore it.
    - `fairness_key`: a str (UTF-8) or bytes of 1 to 255 bytes naming the tenant the request
      belongs to. The broker shares a service fairly between tenants, not between requests, so
      one that floods it cannot starve the others; without a key the tenant is this client's
      connection. Requests from many connections can share one key, and one connection can use
      several.

    A priority or key outside these bounds raises ValueError, before anything is sent.
    """

    def __init__(self, endpoint=protocol.DEFAULT_BROKER, *, timeout=2.5, retries=2, backoff=0.1,
                 curve=None, context=None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._curve = curve
        self._context = context or zmq.Context.instance()
        self._next_id = 1
        self._socket = None
        self._reconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def call(self, service, payload=None, *, timeout=None, deadline_ms=None, retries=None,
             priority=None, fairness_key=None):
        """Sends `payload` as msgpack and returns the decoded reply. Raises HandlerError when the
        handler answered {"error": ...}, Timeout when nothing came back, and for other statuses
        the ZbrokerError subclass named after them (Unavailable for 503, ...).

        `priority` (0 to 9, higher first in the service's queue under the broker's default
        --queue-policy priority) and `fairness_key` (the tenant whose requests share the service
        fairly with others'; default this connection): see the class docstring."""
        frames = self.call_raw(service, pack(payload), timeout=timeout, deadline_ms=deadline_ms,
                               retries=retries, priority=priority, fairness_key=fairness_key)
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
                 priority=None, fairness_key=None):
        """Sends `body` (bytes, or a list of frames) as it is; returns the reply frames.
        Raises like call(), except that an {"error": ...} reply is returned, not decoded.
        `priority` and `fairness_key` as for call()."""
        response = self.request(service, body, timeout=timeout, deadline_ms=deadline_ms,
                                retries=retries, priority=priority, fairness_key=fairness_key)
        if response.status == protocol.NO_REPLY:
            raise Timeout(f"no reply from {self.endpoint} for {service!r} after "
                          f"{1 + max(self._retries(retries), 0)} attempt(s) of "
                          f"{self._timeout(timeout)} s: is zbroker running there?",
                          service=service)
        if not response.ok:
            raise error_for_status(response.status, service)
        return response.frames

    def request(self, service, body, *, timeout=None, deadline_ms=None, retries=None,
                priority=None, fairness_key=None):
        """The Response for `body` (bytes or frames), whatever its status; NO_REPLY (0) when
        every attempt went unanswered. `deadline_ms` defaults to the timeout; 0 sends none.
        `priority` (0 to 9, higher goes first) and `fairness_key` (the tenant; default this
        connection) go with every attempt, as for call()."""
        options = _options(priority, fairness_key)
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
            # A fresh socket, so a late answer to this attempt cannot be taken for the next one's.
            self._reconnect()
            if attempt < attempts:
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        return response

    def pipeline(self, service, payloads, *, window=100, timeout=None, deadline_ms=None, raw=False,
                 priority=None, fairness_key=None):
        """Yields a Result(status, reply) per payload, in input order, keeping at most `window`
        requests between the oldest unanswered and the newest sent. Nothing is retried: a
        request without an answer within `timeout` (plus a grace) yields status NO_REPLY (0).
        With raw=True payloads are bytes (or frame lists) and replies frame lists.
        Every request carries `priority` and `fairness_key`, as for call(); a ValueError for
        them comes from the first next(), before anything is sent.

        The requests that fit in the window at one time go out as one message (several past
        protocol.BATCH_BYTES of envelope), and the broker batches its answers the same way."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window!r}")
        options = _options(priority, fairness_key)
        timeout = self._timeout(timeout)
        wait = timeout + reply_grace(timeout)
        service = self._service(service)
        deadline, refused = self._deadline(service, timeout, deadline_ms)
        payloads = iter(payloads)
        exhausted = False
        pending = {}  # request id -> input index
        expiries = collections.deque()  # (give up at, request id), in sending order
        answered = {}  # input index -> Result, until its turn to be yielded
        writer = protocol.Writer()
        batch = []  # (request id, input index) of the records in `writer`
        sent = yielded = 0
        silent = False

        def flush():
            nonlocal silent
            if writer.empty:
                return
            delivered = self._send(writer.take(), wait)
            give_up = time.monotonic() + wait
            for request_id, index in batch:
                if delivered:
                    pending[request_id] = index
                    expiries.append((give_up, request_id))
                else:
                    answered[index] = Result(protocol.NO_REPLY, None)
                    silent = True
            batch.clear()

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
                        request_id = self._new_id()
                        writer.request(request_id, service, body, deadline, **options)
                        batch.append((request_id, sent))
                        if len(writer) >= protocol.BATCH_BYTES:
                            flush()
                    sent += 1
                flush()
                while yielded in answered:
                    yield answered.pop(yielded)
                    yielded += 1
                if exhausted and yielded == sent:
                    return
                if not exhausted and sent - yielded < window:
                    continue  # room to send more
                while expiries and expiries[0][1] not in pending:
                    expiries.popleft()
                give_up, oldest = expiries[0]
                left = give_up - time.monotonic()
                if left <= 0:
                    expiries.popleft()
                    answered[pending.pop(oldest)] = Result(protocol.NO_REPLY, None)
                    silent = True
                    continue
                if not self._socket.poll(max(1, int(left * 1000))):
                    continue
                while True:
                    try:
                        message = self._socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    for record in self._answers(message):
                        index = pending.pop(record.id, None)
                        if index is None:
                            log.debug("ignoring an answer to request %r, not awaited", record.id)
                            continue
                        answered[index] = Result(record.status,
                                                 self._decode(record.status, record.body, raw))
        finally:
            # Answers still to come belong to nobody now: a new socket never sees them.
            if pending or silent:
                self._reconnect()

    def services(self, timeout=None):
        """The broker's mmi.services map: {service: {workers, queued, in_flight, served, errors}}."""
        frames = self.call_raw(protocol.MMI_SERVICES, b"", timeout=timeout)
        return unpack(frames[0])

    def stats(self, timeout=None):
        """The broker's counters (mmi.stats), as `zclient stats --json` shows them. With CURVE
        on, only an admin key may read them: others get ZbrokerError with status 403."""
        frames = self.call_raw(protocol.MMI_STATS, b"", timeout=timeout)
        if frames == [protocol.MMI_FORBIDDEN]:
            raise ZbrokerError(f"{protocol.MMI_STATS} is forbidden (403): the broker needs an "
                               f"admin key for it", status=403, service=protocol.MMI_STATS)
        return unpack(frames[0])

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
        if self._socket is None:
            raise RuntimeError(f"this Client of {self.endpoint} is closed: make a new one")
        return service.encode() if isinstance(service, str) else bytes(service)

    @staticmethod
    def _deadline(service, timeout, deadline_ms):
        """(deadline_ms to send or None, refused). Refused: what the broker would answer 400
        and ZB/1 cannot even carry, a service name over 255 bytes or a negative deadline_ms;
        answered 400 here, as the broker did when these went over ZBC01."""
        if deadline_ms is None:
            deadline_ms = max(1, int(timeout * 1000))
        deadline_ms = int(deadline_ms)
        if len(service) > protocol.MAX_SERVICE_NAME_SIZE or deadline_ms < 0:
            log.debug("refusing a request for %r (deadline_ms %d): the broker would answer 400",
                      service[:40], deadline_ms)
            return None, True
        # ZB/1 carries at most 2**32 - 1 ms (49.7 days); a longer deadline is cut to that.
        return (min(deadline_ms, protocol.MAX_U32) if deadline_ms else None), False

    def _new_id(self):
        request_id = struct.pack("<Q", self._next_id)
        self._next_id += 1
        return request_id

    def _reconnect(self):
        self.close()
        socket = self._context.socket(zmq.DEALER)
        socket.linger = 0  # unsent or unanswered requests die with the socket
        if self._curve is not None:
            self._curve.apply(socket)
        socket.connect(self.endpoint)
        self._socket = socket

    def _send(self, frames, wait):
        # A DEALER queues while it connects; sending only blocks when that queue is full.
        self._socket.sndtimeo = max(1, int(wait * 1000))
        try:
            self._socket.send_multipart(frames)
            return True
        except zmq.Again:
            log.debug("could not queue a request to %s within %s s", self.endpoint, wait)
            return False

    def _attempt(self, service, deadline, body, timeout, options):
        request_id = self._new_id()
        writer = protocol.Writer()
        writer.request(request_id, service, body, deadline, **options)
        give_up = time.monotonic() + timeout + reply_grace(timeout)
        if not self._send(writer.take(), timeout):
            return Response(protocol.NO_REPLY, [])
        while True:
            left = give_up - time.monotonic()
            if left <= 0 or not self._socket.poll(max(1, int(left * 1000))):
                if time.monotonic() >= give_up:
                    return Response(protocol.NO_REPLY, [])
                continue
            for record in self._answers(self._socket.recv_multipart()):
                if record.id == request_id:
                    return Response(record.status,
                                    record.body if record.status == protocol.OK else [])
                log.debug("ignoring an answer to request %r, no longer awaited", record.id)

    def _answers(self, message):
        """The ANSWER records of a message from the broker; none when it is malformed (it is
        then ignored whole, as the broker does with ours)."""
        try:
            records = protocol.decode(message)
        except protocol.MalformedMessage as e:
            log.warning("ignoring a malformed message from %s (%s): %r", self.endpoint, e,
                        [bytes(frame[:64]) for frame in message[:4]])
            return []
        if any(record.command != protocol.Command.ANSWER for record in records):
            log.warning("ignoring a message from %s with records other than ANSWER: %s",
                        self.endpoint, [record.command.name for record in records])
            return []
        return records

    @staticmethod
    def _decode(status, body, raw):
        if status != protocol.OK:
            return None
        if raw:
            return body
        return unpack(body[0]) if body and body[0] else None
