"""ZBC01 client: synchronous calls with Lazy Pirate retries, and a pipelined window of requests."""
import collections
import logging
import struct
import time
from typing import Any, List, NamedTuple, Optional

import msgpack
import zmq

from . import protocol
from .errors import HandlerError, Timeout, ZbrokerError, error_for_status

log = logging.getLogger("zbroker.client")

_MAX_BACKOFF = 5.0
_EMPTY_HEADERS = msgpack.packb({})


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
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [bytes(body)]
    frames = [bytes(part) for part in body]
    if not frames:
        raise ValueError("a request needs at least one body frame (b'' is one)")
    return frames


def _parse_reply(frames):
    """(request_id, status, body) of a ZBC01 answer, or None when it is malformed."""
    if len(frames) < 5 or frames[0] != b"" or frames[1] != protocol.ZBC_CLIENT:
        return None
    status = frames[4]
    if len(status) != 3 or not status.isdigit():
        return None
    return frames[3], int(status), frames[5:]


class Client:
    """A ZBC01 client on one DEALER socket. `call()` sends msgpack and returns the decoded
    reply, raising a ZbrokerError subclass for any other status; `call_raw()` does the same with
    bytes; `request()` returns the status instead of raising; `pipeline()` keeps a window of
    requests in flight.

    Lazy Pirate (zguide ch. 4): an attempt that gets no answer within `timeout` (seconds) closes
    the socket and opens a new one, so nothing of it lingers, then retries under a new request
    id, up to `retries` times, waiting `backoff` seconds (doubling, at most 5 s) in between.
    Statuses such as 503 or 504 are answers: never retried. Not thread-safe: one per thread.
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

    def call(self, service, payload=None, *, timeout=None, deadline_ms=None, retries=None):
        """Sends `payload` as msgpack and returns the decoded reply. Raises HandlerError when the
        handler answered {"error": ...}, Timeout when nothing came back, and for other statuses
        the ZbrokerError subclass named after them (Unavailable for 503, ...)."""
        frames = self.call_raw(service, pack(payload), timeout=timeout, deadline_ms=deadline_ms,
                               retries=retries)
        if not frames:
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

    def call_raw(self, service, body, *, timeout=None, deadline_ms=None, retries=None):
        """Sends `body` (bytes, or a list of frames) as it is; returns the reply frames.
        Raises like call(), except that an {"error": ...} reply is returned, not decoded."""
        response = self.request(service, body, timeout=timeout, deadline_ms=deadline_ms,
                                retries=retries)
        if response.status == protocol.NO_REPLY:
            raise Timeout(f"no reply from {self.endpoint} for {service!r} after "
                          f"{1 + max(self._retries(retries), 0)} attempt(s) of "
                          f"{self._timeout(timeout)} s: is zbroker running there?",
                          service=service)
        if not response.ok:
            raise error_for_status(response.status, service)
        return response.frames

    def request(self, service, body, *, timeout=None, deadline_ms=None, retries=None):
        """The Response for `body` (bytes or frames), whatever its status; NO_REPLY (0) when
        every attempt went unanswered. `deadline_ms` defaults to the timeout; 0 sends none."""
        timeout = self._timeout(timeout)
        attempts = 1 + max(self._retries(retries), 0)
        headers = self._headers(timeout, deadline_ms)
        envelope = self._envelope(service)
        frames = _frames_of(body)
        backoff = self.backoff
        for attempt in range(1, attempts + 1):
            response = self._attempt(envelope, headers, frames, timeout)
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

    def pipeline(self, service, payloads, *, window=100, timeout=None, deadline_ms=None, raw=False):
        """Yields a Result(status, reply) per payload, in input order, keeping at most `window`
        requests between the oldest unanswered and the newest sent. Nothing is retried: a
        request without an answer within `timeout` (plus a grace) yields status NO_REPLY (0).
        With raw=True payloads are bytes (or frame lists) and replies frame lists."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window!r}")
        timeout = self._timeout(timeout)
        wait = timeout + reply_grace(timeout)
        headers = self._headers(timeout, deadline_ms)
        envelope = self._envelope(service)
        payloads = iter(payloads)
        exhausted = False
        pending = {}  # request id -> input index
        expiries = collections.deque()  # (give up at, request id), in sending order
        answered = {}  # input index -> Result, until its turn to be yielded
        sent = yielded = 0
        silent = False
        try:
            while True:
                while not exhausted and sent - yielded < window:
                    try:
                        payload = next(payloads)
                    except StopIteration:
                        exhausted = True
                        break
                    request_id = self._new_id()
                    body = _frames_of(payload) if raw else [pack(payload)]
                    if self._send(envelope + [request_id, headers] + body, wait):
                        pending[request_id] = sent
                        expiries.append((time.monotonic() + wait, request_id))
                    else:
                        answered[sent] = Result(protocol.NO_REPLY, None)
                        silent = True
                    sent += 1
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
                        frames = self._socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    parsed = _parse_reply(frames)
                    if parsed is None or parsed[0] not in pending:
                        log.debug("ignoring a malformed or unawaited answer: %r", frames[:5])
                        continue
                    request_id, status, body = parsed
                    answered[pending.pop(request_id)] = Result(status,
                                                               self._decode(status, body, raw))
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

    @staticmethod
    def _headers(timeout, deadline_ms):
        if deadline_ms is None:
            deadline_ms = max(1, int(timeout * 1000))
        if deadline_ms == 0:
            return _EMPTY_HEADERS
        return pack({protocol.HEADER_DEADLINE_MS: int(deadline_ms)})

    def _envelope(self, service):
        """The frames before a request's id: "" ZBC01 service."""
        if self._socket is None:
            raise RuntimeError(f"this Client of {self.endpoint} is closed: make a new one")
        service = service.encode() if isinstance(service, str) else bytes(service)
        return [b"", protocol.ZBC_CLIENT, service]

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

    def _attempt(self, envelope, headers, body, timeout):
        request_id = self._new_id()
        give_up = time.monotonic() + timeout + reply_grace(timeout)
        if not self._send(envelope + [request_id, headers] + body, timeout):
            return Response(protocol.NO_REPLY, [])
        while True:
            left = give_up - time.monotonic()
            if left <= 0 or not self._socket.poll(max(1, int(left * 1000))):
                if time.monotonic() >= give_up:
                    return Response(protocol.NO_REPLY, [])
                continue
            frames = self._socket.recv_multipart()
            parsed = _parse_reply(frames)
            if parsed is None:
                log.warning("ignoring a malformed answer from %s: %r", self.endpoint, frames[:5])
                continue
            if parsed[0] != request_id:
                log.debug("ignoring an answer to request %r, no longer awaited", parsed[0])
                continue
            return Response(parsed[1], parsed[2])

    @staticmethod
    def _decode(status, body, raw):
        if status != protocol.OK:
            return None
        if raw:
            return body
        return unpack(body[0]) if body else None
