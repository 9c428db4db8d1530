"""Python client and worker for zbroker, the ZeroMQ Majordomo (7/MDP + 8/MMI) job broker.

    from zbroker import Client, Worker
    Client("tcp://localhost:5555").call("echo", {"x": 1})      # msgpack in and out

    worker = Worker("tcp://localhost:5555")
    @worker.handle("upper")
    def upper(text): return text.upper()
    worker.run()                                                # until worker.stop()
"""
import logging

from . import protocol
from .client import Client, Response, Result, error_message
from .curve import CurveKeys, generate_keypair, read_keypair
from .errors import (BadRequest, DeadlineExceeded, HandlerError, QueueFull, RetriesExhausted,
                     Timeout, TooLarge, Unavailable, ZbrokerError)
from .worker import Worker

__version__ = "0.1.0"

# A library logs; the application decides where to (logging.basicConfig() shows warnings).
logging.getLogger("zbroker").addHandler(logging.NullHandler())

__all__ = [
    "Client", "Response", "Result", "error_message", "Worker", "CurveKeys", "generate_keypair",
    "read_keypair", "ZbrokerError", "Timeout", "BadRequest", "TooLarge", "QueueFull",
    "RetriesExhausted", "Unavailable", "DeadlineExceeded", "HandlerError", "protocol",
]
