"""Exceptions for the answers that are not a reply: one class per ZBC01 status."""
from . import protocol


class ZbrokerError(Exception):
    """A request that did not get a 200 reply; `status` is the broker's code (0: no reply)."""

    status = None

    def __init__(self, message, status=None, service=None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.service = service


class Timeout(ZbrokerError, TimeoutError):
    """No answer at all within the timeout, after every retry: the broker is unreachable or slow."""

    status = protocol.NO_REPLY


class BadRequest(ZbrokerError):
    """400: the broker refused the request as malformed (its log says why)."""

    status = protocol.BAD_REQUEST


class TooLarge(ZbrokerError):
    """413: the body is over the broker's --max-msg-size."""

    status = protocol.TOO_LARGE


class QueueFull(ZbrokerError):
    """429: too many requests wait for the service; retry later or start more workers."""

    status = protocol.QUEUE_FULL


class RetriesExhausted(ZbrokerError):
    """500: every worker given the request died on it."""

    status = protocol.RETRIES_EXHAUSTED


class Unavailable(ZbrokerError):
    """503: no worker took the request before its deadline, or the broker is draining."""

    status = protocol.UNAVAILABLE


class DeadlineExceeded(ZbrokerError):
    """504: a worker had the request but did not answer before its deadline."""

    status = protocol.DEADLINE_EXCEEDED


class HandlerError(ZbrokerError):
    """200, but the worker's handler failed and answered {"error": message}."""

    status = protocol.OK


_REASONS = {
    protocol.BAD_REQUEST: (BadRequest, "bad request (400): the broker refused it as malformed"),
    protocol.TOO_LARGE: (TooLarge, "request too large (413): over the broker's --max-msg-size"),
    protocol.QUEUE_FULL: (QueueFull, "queue full (429): too many requests wait for the service"),
    protocol.RETRIES_EXHAUSTED: (RetriesExhausted,
                                 "retries exhausted (500): every worker given it died on it"),
    protocol.UNAVAILABLE: (Unavailable,
                           "unavailable (503): no worker took it in time, or the broker is draining"),
    protocol.DEADLINE_EXCEEDED: (DeadlineExceeded,
                                 "deadline exceeded (504): the worker did not answer in time"),
}


def error_for_status(status, service):
    """The exception for a status other than 200."""
    cls, reason = _REASONS.get(status, (ZbrokerError, f"unexpected status {status}"))
    return cls(f"service {service!r}: {reason}", status=status, service=service)
