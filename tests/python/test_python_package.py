"""The Python package (python/zbroker) against real zbroker and zworker processes, zclient and
the Python examples; its ZB/1 codec (protocol.py) on its own; and its client and worker against
scripted brokers that show what they put on the wire. Run: ZBROKER_BIN_DIR=build/release/bin
PYTHONPATH=python python3 -m unittest discover -s tests/python -v"""
import collections
import json
import logging
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import unittest

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
sys.path.insert(0, os.path.join(ROOT, "python"))

import zbroker  # noqa: E402
from processes import (PATIENCE, START_PATIENCE, Process, binary, start_broker,  # noqa: E402
                       too_slow)
from zbroker import protocol  # noqa: E402
from zbroker.protocol import Command  # noqa: E402

PATIENCE_MS = int(PATIENCE * 1000)

# Broker, zworker and Python workers get the same interval: each judges the other by its own.
# Long enough that a loaded machine running sanitizer builds never misses 5 in a row; the tests
# of heartbeating itself (class Heartbeats) use shorter ones.
HEARTBEAT_MS = 1000
LIVENESS = 5


def eventually(condition, timeout=PATIENCE, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(too_slow(what, timeout))


def stop_process(child):
    child.stop()
    child.proc.stdout.close()  # never read: the children log to stderr
    if not child._reader.is_alive():  # it has read stderr to the end
        child.proc.stderr.close()


def message(*records, frames=()):
    """A ZB/1 message written by hand: the signature, the records' bytes, then `frames`."""
    return [protocol.SIGNATURE + b"".join(records), *frames]


def inline(body):
    return struct.pack("<BI", 0, len(body)) + body


def answer_record(request_id, status, body=b""):
    return (b"\x12" + bytes([len(request_id)]) + request_id + struct.pack("<H", status) +
            inline(body))


class LogWatcher(logging.Handler):
    """Collects what a zbroker logger says, at every level, so a test can wait for a line."""

    def __init__(self, test, name):
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.lines = []
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        test.addCleanup(logger.setLevel, level)
        test.addCleanup(logger.removeHandler, self)

    def emit(self, record):
        with self._cond:
            self.lines.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, pattern, timeout=PATIENCE):
        regex = re.compile(pattern)
        with self._cond:
            if not self._cond.wait_for(lambda: any(regex.search(l) for l in self.lines), timeout):
                raise AssertionError(too_slow(f"a log line matching {pattern!r}", timeout) +
                                     f"; got {self.lines}")


class FakeBroker(threading.Thread):
    """A ROUTER on an ephemeral port that records the ZB/1 messages a client sends and sends only
    what it is told, to see what a client puts on the wire and how it takes odd answers."""

    def __init__(self):
        super().__init__(daemon=True)
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.messages = []  # (identity, frames, records) per message received
        self.requests = []  # (identity, REQUEST record) per record received, in order
        self.errors = []  # messages that did not decode: the client broke the protocol
        self.on_request = None  # returns the messages to send for a (identity, record)
        self._outbox = queue.Queue()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self.start()

    def run(self):
        while not self._stopping.is_set():
            if self.socket.poll(10):
                identity, *frames = self.socket.recv_multipart()
                try:
                    records = protocol.decode(frames)
                except protocol.MalformedMessage as e:
                    records = []
                    self.errors.append(f"{e}: {frames!r:.200}")
                with self._cond:
                    self.messages.append((identity, frames, records))
                    self.requests += [(identity, record) for record in records]
                    self._cond.notify_all()
                for record in records:
                    for answer in self.on_request((identity, record)) if self.on_request else []:
                        self.socket.send_multipart(answer)
            while not self._outbox.empty():
                self.socket.send_multipart(self._outbox.get())
        self.socket.close()

    @staticmethod
    def answer(request, status=200, body=(b"",), request_id=None):
        return FakeBroker.answers([request], status, body, request_id)

    @staticmethod
    def answers(requests, status=200, body=None, request_id=None):
        """One message answering every request of `requests` (of one client), in that order;
        each echoes its request's body unless `body` is given."""
        writer = protocol.Writer()
        for _, record in requests:
            writer.answer(record.id if request_id is None else request_id, status,
                          list(record.body if body is None else body))
        return [requests[0][0], *writer.take()]

    def send(self, message):
        self._outbox.put(message)

    def _wait(self, what, count, timeout):
        with self._cond:
            if not self._cond.wait_for(lambda: len(getattr(self, what)) >= count or self.errors,
                                       timeout):
                raise AssertionError(too_slow(f"{count} {what} arriving", timeout) +
                                     f"; {len(getattr(self, what))} did")
            if self.errors:
                raise AssertionError(f"the client sent malformed ZB/1: {self.errors}")
            return list(getattr(self, what))

    def wait_for_requests(self, count, timeout=PATIENCE):
        return self._wait("requests", count, timeout)

    def wait_for_messages(self, count, timeout=PATIENCE):
        return self._wait("messages", count, timeout)

    def stop(self):
        self._stopping.set()
        self.join(5)


def bind(socket, endpoint, timeout=PATIENCE):
    """Binds, retrying while the port is still held by a socket just closed (libzmq closes its
    listener in the background), so that a test can restart a broker on its endpoint."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.bind(endpoint)
            return
        except zmq.ZMQError as e:
            if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class ScriptedBroker:
    """A ROUTER on an ephemeral port that a test drives itself, record by record, to see what a
    worker puts on the wire and in which order. HEARTBEATs are skipped unless asked for."""

    def __init__(self, test, endpoint="tcp://127.0.0.1:*"):
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.linger = 0
        bind(self.socket, endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.messages = []  # the records of each message received, in order
        self._unread = collections.deque()  # (identity, record) not yet returned by next()
        test.addCleanup(self.socket.close)

    def next(self, timeout=PATIENCE, keepalive_to=None, skip=(Command.HEARTBEAT,)):
        """The next (identity, record) a worker sent. With `keepalive_to` (an identity), sends it
        a HEARTBEAT every 50 ms meanwhile, so that it never finds this broker silent."""
        deadline = time.monotonic() + timeout
        while True:
            while self._unread:
                identity, record = self._unread.popleft()
                if record.command not in skip:
                    return identity, record
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(too_slow("a record from the worker", timeout))
            if keepalive_to is not None:
                self.send(keepalive_to, lambda w: w.heartbeat())
            if self.socket.poll(max(1, int(min(left, 0.05) * 1000))):
                identity, *frames = self.socket.recv_multipart()
                records = protocol.decode(frames)  # the worker must send nothing malformed
                self.messages.append(records)
                self._unread += [(identity, record) for record in records]

    def expect(self, command, **options):
        identity, record = self.next(**options)
        if record.command != command:
            raise AssertionError(f"expected {command.name} from the worker, got {record}")
        return identity, record

    def send(self, identity, write):
        """Sends one message to `identity`: `write` adds its records to a protocol.Writer."""
        writer = protocol.Writer()
        write(writer)
        self.socket.send_multipart([identity, *writer.take()])

    def send_frames(self, identity, frames):
        self.socket.send_multipart([identity, *frames])

    def stop_worker(self, worker):
        """Stops `worker` as a broker would have it: echoes its CREDIT 0, so it need not wait."""
        stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
        stopper.start()
        deadline = time.monotonic() + PATIENCE
        while stopper.is_alive() and time.monotonic() < deadline:
            if self.socket.poll(50):
                identity, *frames = self.socket.recv_multipart()
                if any(r.command == Command.CREDIT for r in protocol.decode(frames)):
                    self.send(identity, lambda w: w.credit(0))
        stopper.join()


class BrokerTestCase(unittest.TestCase):
    """A real zbroker per test; every process, worker and socket is gone when the test ends."""

    broker_args = ()
    heartbeat_ms = HEARTBEAT_MS
    liveness = LIVENESS

    def setUp(self):
        self.broker, self.endpoint = self.start_broker()

    def start_broker(self, bind=None):
        args = ("--heartbeat-ms", str(self.heartbeat_ms), "--liveness", str(self.liveness),
                "--drain-timeout-ms", "500", *self.broker_args)
        if bind is None:
            broker, endpoint = start_broker(*args)
        else:
            broker = Process([binary("zbroker"), "--bind", bind, *args])
            endpoint = broker.wait_for_line(r"listening on (tcp://\S+)", START_PATIENCE).group(1)
        self.addCleanup(stop_process, broker)
        return broker, endpoint

    def client(self, endpoint=None, **options):
        """By default one patient attempt: a reply that should come is awaited, never retried."""
        options.setdefault("timeout", PATIENCE)
        options.setdefault("retries", 0)
        client = zbroker.Client(endpoint or self.endpoint, **options)
        self.addCleanup(client.close)
        return client

    def worker(self, **options):
        """A Python worker for this broker, not yet started; stopped when the test ends."""
        options.setdefault("heartbeat_ms", self.heartbeat_ms)
        options.setdefault("liveness", self.liveness)
        options.setdefault("reconnect_ms", 100)
        worker = zbroker.Worker(self.endpoint, **options)
        self.addCleanup(worker.stop)
        return worker

    def process(self, args):
        child = Process(args)
        self.addCleanup(stop_process, child)
        return child

    def zworker(self, *services, extra=()):
        args = [binary("zworker"), "--broker", self.endpoint, "--heartbeat-ms",
                str(self.heartbeat_ms), "--liveness", str(self.liveness), *extra]
        for service in services:
            args += ["--service", service]
        child = self.process(args)
        for service in services:
            self.wait_for_service(service)
        return child

    def zclient(self, *args):
        """zclient's output; by default one patient attempt (a retry would hide a slow reply)."""
        if "--timeout" not in args:
            args = ("--timeout", str(PATIENCE_MS), "--retries", "0", *args)
        return subprocess.run([binary("zclient"), "--broker", self.endpoint, *args],
                              capture_output=True, text=True, timeout=3 * PATIENCE)

    def wait_for_service(self, service, workers=1, timeout=PATIENCE):
        with zbroker.Client(self.endpoint, timeout=1, retries=0) as client:
            def registered():
                try:
                    return client.services().get(service, {}).get("workers") == workers
                except zbroker.Timeout:  # a broker still starting, or just restarted
                    return False

            eventually(registered, timeout, f"{workers} worker(s) for {service!r}")


class ProtocolConstants(unittest.TestCase):
    def test_constants_match_shared_protocol_hpp(self):
        with open(os.path.join(ROOT, "shared", "protocol.hpp")) as f:
            header = f.read()
        strings = dict(re.findall(r'constexpr std::string_view (k\w+) = "([^"]*)"', header))
        self.assertEqual(protocol.MDP_CLIENT.decode(), strings["kMdpClient"])
        self.assertEqual(protocol.MDP_WORKER.decode(), strings["kMdpWorker"])
        self.assertEqual(protocol.ZBC_CLIENT.decode(), strings["kZbcClient"])
        self.assertEqual(protocol.MMI_SERVICES, strings["kMmiServices"])
        self.assertEqual(protocol.MMI_SERVICE, strings["kMmiService"])
        self.assertEqual(protocol.MMI_STATS, strings["kMmiStats"])
        self.assertEqual(protocol.MMI_FOUND.decode(), strings["kMmiFound"])
        self.assertEqual(protocol.MMI_FORBIDDEN.decode(), strings["kMmiForbidden"])
        self.assertEqual(protocol.HEADER_DEADLINE_MS, strings["kHeaderDeadlineMs"])
        self.assertEqual(protocol.HEADER_PRIORITY, strings["kHeaderPriority"])
        self.assertEqual(protocol.HEADER_FAIRNESS_KEY, strings["kHeaderFairnessKey"])
        self.assertIn(f"kMaxPriority = {protocol.MAX_PRIORITY};", header)
        self.assertIn(f"kMaxFairnessKeySize = {protocol.MAX_FAIRNESS_KEY_SIZE};", header)
        self.assertIn(f"kMaxRequestIdSize = {protocol.MAX_REQUEST_ID_SIZE};", header)
        self.assertIn(f"kMaxServiceNameSize = {protocol.MAX_SERVICE_NAME_SIZE};", header)

        commands = enum(header, "WorkerCommand")
        self.assertEqual(len(commands), 5)
        for name, value in commands.items():
            self.assertEqual(getattr(protocol, name), bytes([value]), name)
        statuses = enum(header, "Status")
        self.assertEqual(len(statuses), 8)
        for name, value in statuses.items():
            self.assertEqual(getattr(protocol, name), value, name)
        self.assertEqual(protocol.STATUSES, set(statuses.values()) - {protocol.NO_REPLY})
        self.assertIn(f"kHeartbeatInterval{{{protocol.HEARTBEAT_INTERVAL_MS}}}", header)
        self.assertIn(f"kHeartbeatLiveness = {protocol.HEARTBEAT_LIVENESS};", header)

    def test_zb1_constants_match_shared_wire_hpp(self):
        with open(os.path.join(ROOT, "shared", "wire.hpp")) as f:
            header = f.read()
        self.assertIn(r'kSignature{"ZB\x01", 3}', header)
        self.assertEqual(protocol.SIGNATURE, b"ZB\x01")
        self.assertIn(f"kVersion = {protocol.VERSION};", header)
        commands = enum(header, "Command")
        self.assertEqual(commands, {command.name: command.value for command in Command})
        self.assertIn(f"kHasDeadline = {protocol.HAS_DEADLINE:#04x};", header)
        self.assertIn(f"kHasPriority = {protocol.HAS_PRIORITY:#04x};", header)
        self.assertIn(f"kHasFairnessKey = {protocol.HAS_FAIRNESS_KEY:#04x};", header)
        self.assertIn(f"kHasIdempotencyKey = {protocol.HAS_IDEMPOTENCY_KEY:#04x};", header)
        self.assertIn(f"kInlineBodyLimit = {protocol.INLINE_BODY_LIMIT};", header)
        self.assertIn(f"kMaxBodyFrames = 0x{protocol.MAX_BODY_FRAMES:X};", header)
        self.assertIn(f"kBatchBytes = {protocol.BATCH_BYTES // 1024} * 1024;", header)
        self.assertIn(f"kMaxRecords = {protocol.MAX_RECORDS};", header)


def enum(header, name):
    body = re.search(r"enum class %s[^{]*\{(.*?)\};" % name, header, re.S).group(1)
    return {key.upper(): int(value, 0) for key, value in re.findall(r"(\w+) = (\w+),", body)}


class Wire(unittest.TestCase):
    """protocol.py's ZB/1 encoder and decoder on their own, against bytes written by hand."""

    def test_request_is_encoded_as_docs_protocol_md_shows(self):
        body = b"\xa2hi"
        expected = (b"\x11" + b"\x01" + struct.pack("<I", 2000) + b"\x05req-1" + b"\x04echo" +
                    b"\x00" + struct.pack("<I", len(body)) + body)  # the docs' example
        writer = protocol.Writer()
        writer.request(b"req-1", "echo", body, deadline_ms=2000)
        self.assertEqual(writer.take(), [b"ZB\x01" + expected])
        writer.request(b"req-1", b"echo", [body])
        self.assertEqual(writer.take(), [b"ZB\x01\x11\x00\x05req-1\x04echo" + inline(body)])

    def test_request_with_priority_and_fairness_key_is_encoded_as_shared_wire_hpp_says(self):
        # REQUEST: flags, [deadline_ms u32], [priority u8], [fairness_key short], id, service, body
        writer = protocol.Writer()
        writer.request(b"req-1", "echo", b"hi", deadline_ms=2000, priority=7,
                       fairness_key="tenant-\u00e9")
        [envelope] = writer.take()
        key = "tenant-\u00e9".encode()
        self.assertEqual(len(key), 9)  # UTF-8: the short's length counts bytes
        at = 0

        def take(size):
            nonlocal at
            at += size
            return envelope[at - size:at]

        self.assertEqual(take(3), b"ZB\x01")
        self.assertEqual(take(1), bytes([Command.REQUEST]))
        self.assertEqual(take(1), b"\x07")  # flags: deadline 0x01, priority 0x02, key 0x04
        self.assertEqual(take(4), struct.pack("<I", 2000))
        self.assertEqual(take(1), b"\x07")  # priority
        self.assertEqual(take(1), bytes([len(key)]))
        self.assertEqual(take(len(key)), key)
        self.assertEqual(take(1) + take(5), b"\x05req-1")
        self.assertEqual(take(1) + take(4), b"\x04echo")
        self.assertEqual(take(5), b"\x00" + struct.pack("<I", 2))  # inline body of 2 bytes
        self.assertEqual(take(2), b"hi")
        self.assertEqual(at, len(envelope))

        [request] = protocol.decode([envelope])
        self.assertEqual((request.command, request.id, request.service, request.deadline_ms,
                          request.priority, request.fairness_key, request.body),
                         (Command.REQUEST, b"req-1", b"echo", 2000, 7, key, [b"hi"]))

    def test_request_options_are_each_optional_and_keep_their_order(self):
        key = b"k" * protocol.MAX_FAIRNESS_KEY_SIZE
        cases = [  # (deadline_ms, priority, fairness_key), the bytes after the command
            ((None, None, None), b"\x00"),
            ((None, 0, None), b"\x02\x00"),
            ((None, protocol.MAX_PRIORITY, None), b"\x02\x09"),
            ((None, None, b"t"), b"\x04\x01t"),
            ((None, None, key), b"\x04\xff" + key),
            ((5, None, bytearray(b"t")), b"\x05\x05\x00\x00\x00\x01t"),
            ((None, 3, "t"), b"\x06\x03\x01t"),
            ((0, 3, None), b"\x03\x00\x00\x00\x00\x03"),
        ]
        for (deadline_ms, priority, fairness_key), options in cases:
            with self.subTest(deadline_ms=deadline_ms, priority=priority,
                              fairness_key=fairness_key):
                writer = protocol.Writer()
                writer.request(b"i", b"s", b"", deadline_ms, priority=priority,
                               fairness_key=fairness_key)
                frames = writer.take()
                self.assertEqual(frames, message(b"\x11" + options + b"\x01i\x01s" + inline(b"")))
                [r] = protocol.decode(frames)
                self.assertEqual((r.deadline_ms, r.priority, r.fairness_key, r.id, r.service),
                                 (deadline_ms, priority,
                                  b"" if fairness_key is None else protocol.check_fairness_key(
                                      fairness_key), b"i", b"s"))

    def test_bad_priority_or_fairness_key_is_a_value_error_and_writes_nothing(self):
        writer = protocol.Writer()
        writer.heartbeat()
        before = (len(writer), writer.records)
        for options in ({"priority": 10}, {"priority": -1}, {"priority": 1.0},
                        {"priority": "1"}, {"priority": True}, {"fairness_key": ""},
                        {"fairness_key": b""}, {"fairness_key": "k" * 256},
                        {"fairness_key": "\u00e9" * 128}, {"fairness_key": 7}):
            with self.subTest(**options), self.assertRaises(ValueError) as caught:
                writer.request(b"id", "svc", b"", **options)
            self.assertIn(next(iter(options)), str(caught.exception))
        self.assertEqual((len(writer), writer.records), before)

    def test_every_command_round_trips(self):
        writer = protocol.Writer()
        writer.request(b"\x01" * 8, "svc", b"q", deadline_ms=0)
        writer.answer(b"id", 504)
        writer.ready("svc", 7)
        writer.job(b"token", [b"a", b"b"], deadline_ms=protocol.MAX_U32)
        writer.reply(b"token", b"r")
        writer.heartbeat()
        writer.disconnect()
        writer.credit(0)
        self.assertEqual(writer.records, 8)
        records = protocol.decode(writer.take())
        self.assertEqual([r.command for r in records], list(Command))
        request, answer, ready, job, reply, _, _, credit = records
        self.assertEqual((request.id, request.service, request.deadline_ms, request.body),
                         (b"\x01" * 8, b"svc", 0, [b"q"]))
        self.assertEqual((answer.id, answer.status, answer.body), (b"id", 504, [b""]))
        self.assertEqual((ready.service, ready.credit), (b"svc", 7))
        self.assertEqual((job.token, job.deadline_ms, job.body),
                         (b"token", protocol.MAX_U32, [b"a", b"b"]))
        self.assertEqual((reply.token, reply.deadline_ms, reply.body), (b"token", None, [b"r"]))
        self.assertEqual(credit.credit, 0)
        self.assertTrue(writer.empty)

    def test_several_records_claim_their_body_frames_in_order(self):
        big = bytes(range(256)) * 17  # 4352 bytes: over the inline limit
        writer = protocol.Writer()
        writer.answer(b"1", 200, [b"x" * protocol.INLINE_BODY_LIMIT])  # at the limit: inline
        writer.answer(b"2", 200, big)  # one frame, too large: its own frame
        writer.answer(b"3", 200, [b"small", b"", b"three"])  # several frames: in frames
        writer.answer(b"4", 200, [])  # no body: empty inline
        frames = writer.take()
        self.assertEqual(frames[1:], [big, b"small", b"", b"three"])
        records = protocol.decode(frames)
        self.assertEqual([(r.id, r.body) for r in records],
                         [(b"1", [b"x" * 4096]), (b"2", [big]), (b"3", [b"small", b"", b"three"]),
                          (b"4", [b""])])
        # By hand: the second record's two frames come after the first record's one.
        by_hand = message(b"\x23\x01a\x01\x01\x00", b"\x23\x01b\x01\x02\x00", b"\x24",
                          frames=[b"A", b"B1", b"B2"])
        self.assertEqual([(r.command, r.token, r.body) for r in protocol.decode(by_hand)],
                         [(Command.REPLY, b"a", [b"A"]), (Command.REPLY, b"b", [b"B1", b"B2"]),
                          (Command.HEARTBEAT, b"", ())])

    def test_large_batches_stay_one_message_until_the_sender_takes_them(self):
        writer = protocol.Writer()
        for i in range(2000):
            writer.request(struct.pack("<Q", i), "echo", b"x" * 40)
        self.assertGreater(len(writer), protocol.BATCH_BYTES)  # the sender's cue to take()
        records = protocol.decode(writer.take())
        self.assertEqual([r.id for r in records], [struct.pack("<Q", i) for i in range(2000)])

    def test_malformed_messages_are_refused_whole(self):
        good = answer_record(b"id", 200, b"body")
        cases = {
            "no frames": [],
            "no signature": [b"\x00" + good],
            "an MDP message": [b"", b"MDPW01", b"\x04"],
            "version 2": [b"ZB\x02" + good],
            "no record": message(),
            "an unknown command": message(good, b"\x30"),
            "a command of 0": message(b"\x00"),
            "an unknown flag": message(b"\x22\x01t\x02" + inline(b"")),
            "a JOB with a priority": message(b"\x22\x01t\x02\x05" + inline(b"")),
            "a JOB with a fairness key": message(b"\x22\x01t\x04\x01k" + inline(b"")),
            "a REQUEST with an unknown flag": message(b"\x11\x10\x01i\x01s" + inline(b"")),
            "a REQUEST with an empty fairness key": message(b"\x11\x04\x00\x01i\x01s" +
                                                            inline(b"")),
            "a priority cut short": message(b"\x11\x02"),
            "a fairness key cut short": message(b"\x11\x04\x05abc"),
            "an unknown body form": message(b"\x23\x01t\x02\x00\x00\x00\x00"),
            "an unknown status": message(answer_record(b"id", 201)),
            "no status at all": message(answer_record(b"id", 0)),
            "an inline body past the end": message(b"\x23\x01t\x00\x05\x00\x00\x00abc"),
            "a body claiming a frame that is not there": message(b"\x23\x01t\x01\x01\x00"),
            "a frame no record claims": message(good, frames=[b"stray"]),
            "an id longer than the envelope": message(b"\x12\x09short"),
            "a deadline cut short": message(b"\x11\x01\x10\x27"),
        }
        # A valid record, then one cut short anywhere: nothing of the message is returned.
        for cut in range(1, len(good)):
            cases[f"a second record cut after {cut} byte(s)"] = message(good, good[:cut])
        for what, frames in cases.items():
            with self.subTest(what), self.assertRaises(protocol.MalformedMessage):
                protocol.decode(frames)
        self.assertEqual(len(protocol.decode(message(good, good))), 2)  # the uncut one is fine

    def test_a_message_of_more_than_max_records_is_refused_before_they_are_all_built(self):
        # It was: 3 MB of 1-byte records became 3 million objects, 472 MB.
        self.assertEqual(len(protocol.decode(message(b"\x24" * protocol.MAX_RECORDS))),
                         protocol.MAX_RECORDS)
        credits = b"\x26\x01\x00\x00\x00" * protocol.MAX_RECORDS
        self.assertEqual(len(protocol.decode(message(credits))), protocol.MAX_RECORDS)
        for record in (b"\x24", b"\x25", b"\x26\x01\x00\x00\x00"):
            flood = message(record * (1024 * 1024 // len(record)))
            with self.subTest(record=record):
                tracemalloc.start()
                try:
                    with self.assertRaises(protocol.MalformedMessage) as caught:
                        protocol.decode(flood)
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                self.assertIn(f"more than {protocol.MAX_RECORDS} records", str(caught.exception))
                # The envelope's copy and at most MAX_RECORDS records of some 200 bytes.
                self.assertLess(peak, 32 * 1024 * 1024)

    def test_what_zb1_cannot_carry_is_refused_and_leaves_the_message_as_it_was(self):
        writer = protocol.Writer()
        writer.heartbeat()
        before = (len(writer), writer.records)
        for write in (lambda: writer.request(b"x" * 256, "svc", b""),
                      lambda: writer.request(b"id", "s" * 256, b""),
                      lambda: writer.request(b"id", "svc", b"", deadline_ms=-1),
                      lambda: writer.request(b"id", "svc", b"", deadline_ms=2 ** 32),
                      lambda: writer.ready("svc", 2 ** 32),
                      lambda: writer.answer(b"id", 201),
                      lambda: writer.reply(b"t", [b""] * (protocol.MAX_BODY_FRAMES + 1))):
            with self.assertRaises(ValueError):
                write()
        self.assertEqual((len(writer), writer.records), before)
        writer.request(b"x" * 255, "s" * 255, b"")  # the longest that fits
        self.assertEqual(protocol.decode(writer.take())[1].id, b"x" * 255)


class ClientWithZworker(BrokerTestCase):
    def test_call_round_trips_msgpack_through_zworker_echo(self):
        self.zworker("echo")
        payload = {"text": "héllo", "numbers": [1, -2, 2.5, 2**40], "blob": b"\x00\xff",
                   "nothing": None, "nested": {"ok": True}}
        self.assertEqual(self.client().call("echo", payload), payload)

    def test_call_gets_zworker_hello_and_stats_replies(self):
        self.zworker("hello", "stats")
        client = self.client()
        self.assertEqual(client.call("hello", "Hello, Server!"), "Hello, Client!")
        summary = client.call("stats", [2, 4, 4, 4, 5, 5, 7, 9])
        self.assertEqual((summary["count"], summary["mean"], summary["stddev"]), (8, 5.0, 2.0))

    def test_call_raw_sends_and_returns_frames_as_they_are(self):
        self.zworker("echo")
        client = self.client()
        self.assertEqual(client.call_raw("echo", b"\x00not msgpack\xff"), [b"\x00not msgpack\xff"])
        self.assertEqual(client.call_raw("echo", [b"one", b"", b"three"]), [b"one", b"", b"three"])

    def test_handler_error_reply_raises_handler_error(self):
        self.zworker("fail")
        with self.assertRaises(zbroker.HandlerError) as caught:
            self.client().call("fail", 1)
        self.assertEqual(caught.exception.status, 200)
        self.assertIn("always fails", str(caught.exception))

    def test_pipeline_answers_1000_requests_once_each_in_input_order(self):
        self.zworker("echo", extra=("--credit", "64"))
        client = self.client()
        results = list(client.pipeline("echo", range(1000), window=200, timeout=PATIENCE))
        self.assertEqual(results, [(200, i) for i in range(1000)])
        # Each sent once: the broker served exactly 1000, nothing retried or duplicated.
        self.assertEqual(client.services()["echo"]["served"], 1000)
        # Requests went out many to a message, answers came back so: the broker read them all.
        self.assertEqual(client.stats()["malformed"]["bad_envelope"], 0)

    def test_large_bodies_travel_in_frames_of_their_own_both_ways(self):
        self.zworker("echo")
        client = self.client()
        big = bytes(range(256)) * 400  # 102400 bytes: far over the 4096 bytes sent inline
        self.assertEqual(client.call_raw("echo", big), [big])
        self.assertEqual(client.call_raw("echo", [b"small", big, b""]), [b"small", big, b""])
        text = "é" * 5000  # msgpack of over 4096 bytes
        self.assertEqual(client.call("echo", text), text)
        # Many records in one message, each with a body frame of its own, each claiming its own.
        bodies = [bytes([i]) * (protocol.INLINE_BODY_LIMIT + 1 + i) for i in range(20)]
        self.assertEqual(list(client.pipeline("echo", bodies, window=20, raw=True)),
                         [(200, [body]) for body in bodies])
        self.assertEqual(client.stats()["malformed"]["bad_envelope"], 0)

    def test_services_and_has_service_ask_the_broker(self):
        self.zworker("echo")
        client = self.client()
        self.assertTrue(client.has_service("echo"))
        self.assertFalse(client.has_service("nobody"))
        self.assertEqual(client.services()["echo"]["workers"], 1)


class Statuses(BrokerTestCase):
    broker_args = ("--max-msg-size", "1000", "--queue-limit", "1", "--max-attempts", "1")

    def test_no_worker_before_the_deadline_raises_unavailable_503_without_retrying(self):
        client = self.client(retries=3)
        with self.assertRaises(zbroker.Unavailable) as caught:
            client.call("nobody", 1, deadline_ms=200)
        self.assertEqual(caught.exception.status, 503)
        # An answer is not silence: the broker answered one request, not four.
        self.assertEqual(client.stats()["answers"].get("503"), 1)

    def test_deadline_ms_is_sent_apart_from_the_timeout(self):
        client = self.client(timeout=PATIENCE, retries=0)
        start = time.monotonic()
        with self.assertRaises(zbroker.Unavailable):
            client.call("nobody", 1, deadline_ms=100)
        # The broker answers at the 100 ms deadline, not at the timeout: even a slow machine
        # tells the two apart.
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, PATIENCE / 3, f"the 503 came after {elapsed:.2f} s, not about "
                        f"0.1 s: was the timeout ({PATIENCE:g} s) sent as the deadline?")

    def test_empty_service_name_raises_bad_request_400(self):
        with self.assertRaises(zbroker.BadRequest) as caught:
            self.client().call("", 1)
        self.assertEqual(caught.exception.status, 400)

    def test_body_over_max_msg_size_raises_too_large_413(self):
        self.zworker("echo")
        client = self.client()
        self.assertEqual(len(client.call("echo", "x" * 900)), 900)
        with self.assertRaises(zbroker.TooLarge) as caught:
            client.call("echo", "x" * 2000)
        self.assertEqual(caught.exception.status, 413)

    def test_full_queue_raises_queue_full_429(self):
        # One request waits in the queue (the limit is 1) for as long as the test needs: no
        # deadline of its own to race. A worker then ends its wait.
        answers = []

        def wait_in_the_queue():
            with zbroker.Client(self.endpoint, timeout=PATIENCE, retries=0) as other:
                answers.append(other.call("later", 1))

        waiting = threading.Thread(target=wait_in_the_queue)
        waiting.start()
        self.addCleanup(waiting.join)
        client = self.client()
        eventually(lambda: client.services().get("later", {}).get("queued") == 1,
                   what="one request queued")
        with self.assertRaises(zbroker.QueueFull) as caught:
            client.call("later", 2)
        self.assertEqual(caught.exception.status, 429)
        worker = self.worker()
        worker.handle("later", lambda x: x + 1)
        worker.start()
        waiting.join(PATIENCE)
        self.assertEqual(answers, [2], "the queued request was served once a worker came")

    def test_pipeline_yields_statuses_instead_of_raising(self):
        # The second request must reach the broker while the first still fills the queue: a
        # deadline of 2 s leaves a slow machine time for that.
        results = list(self.client().pipeline("nobody", [1, 2], window=2, deadline_ms=2000))
        self.assertEqual(results, [(503, None), (429, None)])
        self.assertFalse(results[0].ok)

    def test_worker_too_slow_raises_deadline_exceeded_504(self):
        self.zworker("sleep")
        with self.assertRaises(zbroker.DeadlineExceeded) as caught:
            self.client().call("sleep", {"ms": 3000}, deadline_ms=1000)
        self.assertEqual(caught.exception.status, 504)

    def test_worker_dying_on_the_request_raises_retries_exhausted_500(self):
        # A worker that takes the request and leaves: with --max-attempts 1 the client gets 500.
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.linger = 0
        self.addCleanup(socket.close)
        socket.connect(self.endpoint)
        ready = protocol.Writer()
        ready.ready("fragile", 1)
        socket.send_multipart(ready.take())
        self.wait_for_service("fragile")

        def take_and_die():
            if socket.poll(PATIENCE_MS) and any(r.command == Command.JOB for r in
                                                protocol.decode(socket.recv_multipart())):
                goodbye = protocol.Writer()
                goodbye.disconnect()
                socket.send_multipart(goodbye.take())

        dying = threading.Thread(target=take_and_die)
        dying.start()
        self.addCleanup(dying.join)
        with self.assertRaises(zbroker.RetriesExhausted) as caught:
            self.client().call("fragile", 1)
        self.assertEqual(caught.exception.status, 500)

    def test_a_service_name_over_255_bytes_is_a_value_error_and_sends_nothing(self):
        # ZB/1 cannot carry it: cut short, it would wait for the workers of another service.
        client = self.client()
        for service in ("s" * 256, "é" * 128, b"s" * 300):
            with self.subTest(service=service[:4]):
                with self.assertRaises(ValueError) as caught:
                    client.call(service, 1)
                self.assertIn("at most 255", str(caught.exception))
                with self.assertRaises(ValueError):
                    client.request(service, b"")
                with self.assertRaises(ValueError):
                    next(client.pipeline(service, [1, 2]))
        self.assertEqual(client.stats()["totals"]["requests"], 1, "only mmi.stats was sent")
        # 255 bytes is the longest name, and it goes whole: no worker has it, hence 503.
        self.assertEqual(client.request("s" * 255, b"", timeout=0.3).status, 503)

    def test_what_zb1_cannot_carry_raises_400_or_413_as_the_broker_does(self):
        # Over ZBC01 the broker answers these 400; ZB/1 cannot even write them.
        client = self.client()
        with self.assertRaises(zbroker.BadRequest):
            client.call("echo", 1, deadline_ms=-1)
        self.assertEqual(client.request("echo", b"", deadline_ms=-1).status, 400)
        self.assertEqual(list(client.pipeline("echo", [1, 2], deadline_ms=-1)),
                         [(400, None), (400, None)])
        # Nor a body of more frames than its u16 count: the broker answers that 413 to others.
        frames = [b""] * (protocol.MAX_BODY_FRAMES + 1)
        with self.assertRaises(zbroker.TooLarge):
            client.call_raw("echo", frames)
        self.assertEqual(list(client.pipeline("echo", [frames, [b"x"]], raw=True, timeout=0.5)),
                         [(413, None), (503, None)])  # the second goes out, to no worker
        self.assertEqual(client.stats()["totals"]["requests"], 2, "only one request was sent")


class LazyPirate(unittest.TestCase):
    """The client against a FakeBroker: what it sends, how it retries, how it takes odd answers."""

    def setUp(self):
        self.fake = FakeBroker()
        self.addCleanup(self.fake.stop)

    def client(self, **options):
        client = zbroker.Client(self.fake.endpoint, **options)
        self.addCleanup(client.close)
        return client

    def test_silence_is_retried_on_fresh_sockets_then_raises_timeout(self):
        client = self.client(timeout=0.2, retries=2, backoff=0.05)
        start = time.monotonic()
        with self.assertRaises(zbroker.Timeout) as caught:
            client.call("echo", "hi")
        elapsed = time.monotonic() - start
        self.assertIsInstance(caught.exception, TimeoutError)
        self.assertEqual(caught.exception.status, 0)
        requests = self.fake.wait_for_requests(3)
        self.assertEqual(len(requests), 3)
        self.assertEqual(len({identity for identity, _ in requests}), 3,
                         "each attempt on a new socket")
        self.assertEqual(len({r.id for _, r in requests}), 3, "each attempt under a new id")
        for _, r in requests:
            self.assertEqual((r.command, r.service, len(r.id)), (Command.REQUEST, b"echo", 8))
            self.assertEqual(r.deadline_ms, 200)
            self.assertEqual(r.body, [msgpack.packb("hi")])
        # 3 attempts of 0.2 s + 0.05 s grace, and 0.05 + 0.1 s backoff between them: never less,
        # and on a loaded machine somewhat more, but nowhere near another attempt's worth more.
        self.assertGreater(elapsed, 0.85)
        self.assertLess(elapsed, 10, f"3 attempts of 0.25 s took {elapsed:.2f} s")

    def test_request_carries_its_deadline_only_when_there_is_one(self):
        self.fake.on_request = lambda request: [self.fake.answer(request)]
        client = self.client(timeout=PATIENCE, retries=0)
        client.call_raw("echo", b"", deadline_ms=0)
        client.call_raw("echo", b"", deadline_ms=2 ** 40)
        client.call_raw("echo", b"")
        self.assertEqual([r.deadline_ms for _, r in self.fake.wait_for_requests(3)],
                         [None, protocol.MAX_U32, PATIENCE_MS])

    def test_every_request_carries_its_priority_and_fairness_key(self):
        self.fake.on_request = lambda request: [self.fake.answer(request)]
        client = self.client(timeout=PATIENCE, retries=0)
        client.call("echo", 1, priority=9, fairness_key="tenant-a")
        client.call_raw("echo", b"", priority=0, fairness_key=b"tenant-b")
        client.request("echo", b"", fairness_key="tenant-c")
        client.call("echo", 1)
        self.assertEqual(len(list(client.pipeline("echo", [1, 2], priority=4,
                                                  fairness_key="tenant-d"))), 2)
        self.assertEqual([(r.priority, r.fairness_key) for _, r in self.fake.wait_for_requests(6)],
                         [(9, b"tenant-a"), (0, b"tenant-b"), (None, b"tenant-c"), (None, b""),
                          (4, b"tenant-d"), (4, b"tenant-d")])

    def test_bad_priority_or_fairness_key_raises_before_anything_is_sent(self):
        client = self.client(timeout=PATIENCE, retries=0)
        for options in ({"priority": 10}, {"fairness_key": ""}):
            with self.subTest(**options):
                with self.assertRaises(ValueError):
                    client.call("echo", 1, **options)
                with self.assertRaises(ValueError):
                    client.request("echo", b"", **options)
                with self.assertRaises(ValueError):
                    next(client.pipeline("echo", [1], **options))
        time.sleep(0.1)  # time for anything sent to reach the fake broker
        self.assertEqual(self.fake.messages, [])

    def test_answer_after_a_silent_attempt_is_returned(self):
        def answer_second_attempt(request):
            if len(self.fake.requests) < 2:
                return []
            return [self.fake.answer(request, body=[msgpack.packb("second")])]

        self.fake.on_request = answer_second_attempt
        # Every attempt after the first is answered; spare ones in case a loaded machine makes
        # an answer miss its attempt's 0.625 s.
        client = self.client(timeout=0.5, retries=5, backoff=0.01)
        self.assertEqual(client.call("echo", "x"), "second")

    def test_stale_and_malformed_answers_are_ignored(self):
        wrong = msgpack.packb("wrong")

        def odd_answers_first(request):
            identity, record = request
            ours = answer_record(record.id, 200, wrong)
            return [
                self.fake.answer(request, body=[wrong], request_id=b"other"),  # not awaited
                [identity, b"", b"ZBC01"],  # not ZB/1
                [identity, *message(ours, b"\x12")],  # ours, then a record cut short
                [identity, *message(ours, frames=[b"unclaimed"])],
                [identity, *message(answer_record(record.id, 299, wrong))],  # unknown status
                [identity, *message(ours, b"\x24")],  # with a record only workers get
                self.fake.answer(request, body=[msgpack.packb("right")]),
            ]

        self.fake.on_request = odd_answers_first
        self.assertEqual(self.client(timeout=PATIENCE, retries=0).call("echo", "x"), "right")

    def test_large_bodies_go_in_frames_of_their_own(self):
        big = b"\x01" * (protocol.INLINE_BODY_LIMIT + 1)
        self.fake.on_request = lambda request: [self.fake.answer(request, body=[big, b"tail"])]
        client = self.client(timeout=PATIENCE, retries=0)
        self.assertEqual(client.call_raw("echo", big), [big, b"tail"])
        self.assertEqual(client.call_raw("echo", [b"a", b"b"]), [big, b"tail"])
        small = b"\x02" * protocol.INLINE_BODY_LIMIT
        self.assertEqual(client.call_raw("echo", small), [big, b"tail"])
        sent = [frames for _, frames, _ in self.fake.wait_for_messages(3)]
        self.assertEqual([frames[1:] for frames in sent], [[big], [b"a", b"b"], []])
        self.assertIn(small, sent[2][0], "a body up to the limit goes inline")

    def test_pipeline_sends_what_fits_in_the_window_as_one_message(self):
        # Answered all in one message too, in reverse order: the client matches them by id.
        self.fake.on_request = lambda request: (
            [self.fake.answers(self.fake.requests[::-1])] if request == self.fake.requests[-1]
            else [])
        results = list(self.client(timeout=PATIENCE).pipeline("echo", range(50), window=50))
        self.assertEqual(results, [(200, i) for i in range(50)])
        [(_, frames, records)] = self.fake.wait_for_messages(1)
        self.assertEqual((len(frames), len(records)), (1, 50))
        self.assertEqual([msgpack.unpackb(r.body[0]) for r in records], list(range(50)))
        self.assertEqual(len({r.id for r in records}), 50)

    def test_pipeline_starts_a_new_message_past_batch_bytes_of_envelope(self):
        # 1000 records of over 100 bytes each: about 120 KiB of envelope, so two messages.
        def answer_each_message_at_its_last_request(request):
            identity, _, records = self.fake.messages[-1]  # the message being read
            if request[1] is not records[-1]:
                return []
            return [self.fake.answers([(identity, record) for record in records])]

        self.fake.on_request = answer_each_message_at_its_last_request
        payloads = [b"%04d" % i * 25 for i in range(1000)]
        results = list(self.client(timeout=PATIENCE).pipeline("echo", payloads, window=1000,
                                                              raw=True))
        self.assertEqual(results, [(200, [payload]) for payload in payloads])
        sizes = [len(frames[0]) for _, frames, _ in self.fake.messages]
        self.assertGreater(len(sizes), 1)
        self.assertTrue(all(size < protocol.BATCH_BYTES + 200 for size in sizes), sizes)
        self.assertEqual(sum(len(records) for _, _, records in self.fake.messages), 1000)

    def test_pipeline_keeps_at_most_window_requests_past_the_oldest_unanswered(self):
        log = LogWatcher(self, "zbroker.client")
        results = []
        client = self.client(timeout=PATIENCE)
        runner = threading.Thread(
            target=lambda: results.extend(client.pipeline("echo", range(30), window=10)))
        runner.start()
        self.addCleanup(runner.join, PATIENCE)
        [(identity, _, first)] = self.fake.wait_for_messages(1)
        self.assertEqual(len(first), 10, "the first message holds the whole window")
        first = [(identity, record) for record in first]
        # Answers out of order, and last one for an id never sent: nothing is yielded or sent
        # before #0. The client says when it has read up to that last one.
        stray = (identity, first[0][1]._replace(id=b"\xff" * 8))
        self.fake.send(self.fake.answers(first[:0:-1] + [stray]))
        log.wait_for(r"not awaited")
        self.fake.send(self.fake.answer(first[0], body=first[0][1].body))
        for count in (2, 3):  # each full answer of the window lets the next ten go, at once
            messages = self.fake.wait_for_messages(count)
            records = messages[count - 1][2]
            self.assertEqual([msgpack.unpackb(r.body[0]) for r in records],
                             list(range(10 * (count - 1), 10 * count)),
                             f"message {count} is the next window, and nothing came before it")
            self.fake.send(self.fake.answers([(identity, r) for r in reversed(records)]))
        runner.join(PATIENCE)
        self.assertEqual(results, [(200, i) for i in range(30)])
        self.assertEqual(len(self.fake.messages), 3)

    def test_pipeline_request_without_an_answer_yields_no_reply(self):
        self.fake.on_request = lambda r: [] if msgpack.unpackb(r[1].body[0]) == 1 else [
            self.fake.answer(r, body=r[1].body)]
        # The timeout is how long #1 goes unanswered, and how long #0 and #2 have to be answered.
        results = list(self.client().pipeline("echo", [0, 1, 2], window=3, timeout=3))
        self.assertEqual(results, [(200, 0), (0, None), (200, 2)])


class HostileBroker(unittest.TestCase):
    """The client against a broker that floods it with answers nobody awaits, or answers a
    request it was never sent."""

    # 1000 ANSWER records for ids no client sends: decoding one costs far more than sending it.
    JUNK = message(*(answer_record(b"junk%04d" % i, 200) for i in range(1000)))
    FLOOD_SECONDS = 5  # longer than a flooded call may take, so that the flood outlasts it

    def flooding_broker(self):
        """A ROUTER that floods whoever sends it a request, for FLOOD_SECONDS or until the test
        ends; its endpoint."""
        socket = zmq.Context.instance().socket(zmq.ROUTER)
        socket.linger = 0
        socket.bind("tcp://127.0.0.1:*")
        stop = threading.Event()

        def flood():
            if not socket.poll(PATIENCE_MS):
                return
            identity, *_ = socket.recv_multipart()
            until = time.monotonic() + self.FLOOD_SECONDS
            while not stop.is_set() and time.monotonic() < until:
                socket.send_multipart([identity, *self.JUNK])  # dropped when the client is full
            socket.close()

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        self.addCleanup(flooder.join, PATIENCE)
        self.addCleanup(stop.set)
        return socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def assert_bounded(self, run):
        """Runs `run` and checks it took well under the flood, and little memory."""
        tracemalloc.start()
        start = time.monotonic()
        try:
            run()
            elapsed = time.monotonic() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(elapsed, self.FLOOD_SECONDS - 1, "held past its timeout by the flood")
        # A few messages of junk at a time at most: 1000 records are some 300 kB.
        self.assertLess(peak, 16 * 1024 * 1024)

    def test_a_call_flooded_with_answers_nobody_awaits_returns_by_its_timeout(self):
        # It was: the client read until the socket was empty, which a flood never is, keeping
        # every record; 12 MB of junk took a 1 s call to 2.5 s and 258 MB.
        client = zbroker.Client(self.flooding_broker(), timeout=0.2, retries=0)
        self.addCleanup(client.close)

        def call():
            with self.assertRaises(zbroker.Timeout):
                client.call("echo", 1)

        self.assert_bounded(call)

    def test_a_pipeline_flooded_with_answers_nobody_awaits_gives_up_by_its_timeout(self):
        client = zbroker.Client(self.flooding_broker(), timeout=0.2, retries=0)
        self.addCleanup(client.close)
        self.assert_bounded(lambda: self.assertEqual(
            list(client.pipeline("echo", [1, 2], timeout=0.2)), [(0, None), (0, None)]))

    def test_request_ids_cannot_be_guessed_from_those_a_broker_saw(self):
        # It was: 1, 2, 3... as little-endian u64.
        fake = FakeBroker()
        self.addCleanup(fake.stop)
        fake.on_request = lambda request: [fake.answer(request)]
        client = zbroker.Client(fake.endpoint, timeout=PATIENCE, retries=0)
        self.addCleanup(client.close)
        for _ in range(20):
            client.call_raw("echo", b"")
        ids = [struct.unpack("<Q", r.id)[0] for _, r in fake.wait_for_requests(20)]
        self.assertEqual(len(set(ids)), 20)
        gaps = [abs(later - earlier) for earlier, later in zip(ids, ids[1:])]
        self.assertGreater(min(gaps), 2 ** 20, "neither next nor near")

    def test_services_and_stats_names_that_are_not_utf8_come_with_replacement_characters(self):
        # It was: UnicodeDecodeError. A msgpack str need not hold UTF-8, and a worker names
        # its service with any bytes.
        figures = {b"ok": {"workers": 1}, b"bad\xff\xfe": {"workers": 2}}
        answer = msgpack.packb(figures, use_bin_type=False)  # bytes as str: not UTF-8
        fake = FakeBroker()
        self.addCleanup(fake.stop)
        fake.on_request = lambda request: [fake.answer(request, body=[answer])]
        client = zbroker.Client(fake.endpoint, timeout=PATIENCE, retries=0)
        self.addCleanup(client.close)
        expected = {"ok": {"workers": 1}, "bad\ufffd\ufffd": {"workers": 2}}
        self.assertEqual(client.services(), expected)
        self.assertEqual(client.stats(), expected)
        json.dumps(client.stats(), ensure_ascii=False).encode()  # prints and dumps as UTF-8

    def test_services_that_are_not_a_msgpack_map_raise_zbroker_error(self):
        fake = FakeBroker()
        self.addCleanup(fake.stop)
        for answer in (b"\xc1", msgpack.packb([1, 2]), b""):
            fake.on_request = lambda request, answer=answer: [fake.answer(request, body=[answer])]
            client = zbroker.Client(fake.endpoint, timeout=PATIENCE, retries=0)
            self.addCleanup(client.close)
            with self.subTest(answer=answer), self.assertRaises(zbroker.ZbrokerError):
                client.services()


class BrokerComesBack(BrokerTestCase):
    def test_call_raises_timeout_while_the_broker_is_down_and_succeeds_once_it_is_back(self):
        client = self.client(timeout=1, retries=0)
        self.assertEqual(client.services(timeout=PATIENCE), {})
        self.broker.proc.kill()
        self.broker.stop()
        with self.assertRaises(zbroker.Timeout):
            client.services()
        restart = threading.Timer(0.5, lambda: self.start_broker(bind=self.endpoint))
        restart.start()
        self.addCleanup(restart.join)
        # Lazy Pirate: attempts of 1 s on fresh sockets until the new broker answers; 10
        # attempts with their backoff (0.1 s doubling up to 5 s) span over 35 s.
        self.assertEqual(client.call_raw(protocol.MMI_SERVICE, b"x", retries=10), [b"404"])


class PythonWorker(BrokerTestCase):
    def test_python_worker_serves_zclient_call(self):
        worker = self.worker()
        worker.handle("reverse", lambda items: items[::-1])
        worker.start()
        self.wait_for_service("reverse")
        result = self.zclient("call", "reverse", '[1, "two", 3.5]')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), [3.5, "two", 1])

    def test_handler_that_raises_answers_an_error_map_and_the_worker_keeps_serving(self):
        worker = self.worker()

        @worker.handle("sqrt")
        def sqrt(x):
            if x < 0:
                raise ValueError(f"no real square root of {x}")
            return x ** 0.5

        worker.start()
        self.wait_for_service("sqrt")
        client = self.client()
        reply = client.call_raw("sqrt", msgpack.packb(-4))
        self.assertEqual(msgpack.unpackb(reply[0]), {"error": "ValueError: no real square root of -4"})
        with self.assertRaises(zbroker.HandlerError):
            client.call("sqrt", -1)
        result = self.zclient("call", "sqrt", "-9")
        self.assertEqual(result.returncode, 8, result.stderr)  # zclient: the handler failed
        self.assertIn("no real square root of -9", result.stderr)
        self.assertEqual(client.call("sqrt", 16), 4.0)
        self.assertEqual((worker.stats()["failed"], worker.stats()["served"]), (3, 1))

    def test_raw_handler_gets_frames_and_may_return_several(self):
        worker = self.worker()
        worker.handle("split", lambda frames: frames[0].split(b","), raw=True)
        worker.start()
        self.wait_for_service("split")
        self.assertEqual(self.client().call_raw("split", b"a,b,\x00"), [b"a", b"b", b"\x00"])

    def test_credit_lets_the_broker_send_requests_ahead(self):
        worker = self.worker(credit=8)
        worker.handle("double", lambda x: 2 * x)
        worker.start()
        self.broker.wait_for_line(r"ready for 'double' with credit 8 \(ZB/1\)")
        results = list(self.client().pipeline("double", range(100), window=50))
        self.assertEqual(results, [(200, 2 * i) for i in range(100)])

    def test_large_bodies_reach_the_handler_and_come_back_in_frames(self):
        worker = self.worker()
        worker.handle("twice", lambda frames: [frame * 2 for frame in frames], raw=True)
        worker.handle("size", len)
        worker.start()
        self.wait_for_service("twice")
        self.wait_for_service("size")
        client = self.client()
        big = bytes(range(256)) * 40  # 10240 bytes: in a frame of its own each way
        self.assertEqual(client.call_raw("twice", [big, b"x"]), [big * 2, b"xx"])
        self.assertEqual(client.call("size", "y" * 100000), 100000)

    def test_worker_registers_again_after_a_broker_restart(self):
        # Patient enough (100 x 1 s) that within the wait below only the new broker's
        # DISCONNECT (answering the worker's next heartbeat) can bring it back.
        worker = self.worker(liveness=100)
        self.assertGreater(worker.heartbeat * worker.liveness, 2 * PATIENCE)
        worker.handle("upper", str.upper)
        worker.start()
        self.wait_for_service("upper")
        self.broker.proc.kill()
        self.broker.stop()
        self.broker, _ = self.start_broker(bind=self.endpoint)
        self.wait_for_service("upper")
        self.assertEqual(self.client().call("upper", "back"), "BACK")
        self.assertGreaterEqual(worker.stats()["reconnects"], 1)
        # Now, while the new broker runs to echo its CREDIT 0; the cleanups would stop that
        # broker first, and a worker whose CREDIT 0 goes unanswered waits out its liveness.
        worker.stop(PATIENCE)

    def test_stop_finishes_the_request_in_hand_then_sends_disconnect(self):
        started, release = threading.Event(), threading.Event()
        worker = self.worker()
        worker.handle("slow", lambda _: started.set() or release.wait(PATIENCE) and "done")
        worker.start()
        self.wait_for_service("slow")
        answers = []

        def call_slow():
            with zbroker.Client(self.endpoint, timeout=PATIENCE, retries=0) as other:
                answers.append(other.call("slow", None))

        caller = threading.Thread(target=call_slow)
        caller.start()
        self.addCleanup(caller.join)
        self.assertTrue(started.wait(PATIENCE), too_slow("the request reaching the handler",
                                                         PATIENCE))
        stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
        stopper.start()
        self.addCleanup(stopper.join)
        # CREDIT 0 first, while the handler still runs; then the reply; then DISCONNECT.
        self.broker.wait_for_line(r"for 'slow' takes no more requests; it holds 1")
        release.set()
        stopper.join(PATIENCE)
        caller.join(PATIENCE)
        self.assertEqual(answers, ["done"])
        self.broker.wait_for_line(r"for 'slow' removed: sent DISCONNECT; 0 request\(s\) re-queued")
        # The broker may forget a service without workers: gone or 0 workers, both say so.
        self.assertEqual(self.client().services().get("slow", {}).get("workers", 0), 0)

    def test_stop_under_load_costs_no_request_an_attempt(self):
        # A rolling restart: the Python worker stops while a client keeps 40 requests in flight
        # and zworker ("echo" is one of its built-in services) serves the rest. Each request
        # must be dispatched once: none re-queued.
        holding, release = threading.Event(), threading.Event()

        def work(x):
            if not holding.is_set():
                holding.set()
                release.wait(PATIENCE)  # held, so the worker has jobs in hand when it stops
            return x

        worker = self.worker(credit=4)
        worker.handle("echo", work)
        worker.start()
        self.wait_for_service("echo")
        results = []
        client = self.client()
        pipeline = threading.Thread(
            target=lambda: results.extend(client.pipeline("echo", range(400), window=40)))
        pipeline.start()
        self.addCleanup(pipeline.join, PATIENCE)
        self.assertTrue(holding.wait(PATIENCE), too_slow("a request reaching the handler",
                                                         PATIENCE))
        self.process([binary("zworker"), "--broker", self.endpoint, "--heartbeat-ms",
                      str(self.heartbeat_ms), "--liveness", str(self.liveness), "--service",
                      "echo"])
        self.wait_for_service("echo", workers=2)
        stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
        stopper.start()
        self.addCleanup(stopper.join)
        held = self.broker.wait_for_line(
            r"worker (\S+) for 'echo' takes no more requests; it holds (\d+)")
        identity = held.group(1)
        self.assertGreaterEqual(int(held.group(2)), 1, "the stopping worker held jobs")
        release.set()
        stopper.join(PATIENCE)
        removed = self.broker.wait_for_line(
            rf"worker {re.escape(identity)} for 'echo' removed: (.*); (\d+) request\(s\) re-queued")
        self.assertEqual((removed.group(1), removed.group(2)), ("sent DISCONNECT", "0"))
        pipeline.join(PATIENCE)
        self.assertEqual(results, [(200, i) for i in range(400)])
        self.assertGreaterEqual(worker.stats()["served"], int(held.group(2)),
                                "it served every job it held when it stopped")
        totals = client.stats()["totals"]
        self.assertEqual(totals["requeued"], 0)
        self.assertEqual(totals["dispatches"], 400, "each request dispatched once")
        lines = [line for line in self.broker.lines if identity in line]
        stopped = next(i for i, line in enumerate(lines) if "takes no more requests" in line)
        removed = next(i for i, line in enumerate(lines) if "removed:" in line)
        self.assertLess(stopped, removed, "CREDIT 0 came before DISCONNECT")


class WorkerOnTheWire(unittest.TestCase):
    """The Python worker against a ScriptedBroker: what it sends, in which order, and how it
    takes what a broker sends."""

    def setUp(self):
        self.broker = ScriptedBroker(self)

    def worker(self, **options):
        options.setdefault("heartbeat_ms", HEARTBEAT_MS)
        options.setdefault("liveness", 30)  # the scripted broker says nothing unless told
        worker = zbroker.Worker(self.broker.endpoint, **options)
        self.addCleanup(self.broker.stop_worker, worker)
        return worker

    @staticmethod
    def jobs(*items):
        """Writes a JOB per (token, value), the value as msgpack."""
        return lambda writer: [writer.job(token, msgpack.packb(value)) for token, value in items]

    def test_ready_carries_the_credit_and_every_job_of_a_message_is_replied(self):
        worker = self.worker(credit=5)
        worker.handle("triple", lambda x: "nothing" if x is None else 3 * x)
        worker.start()
        identity, ready = self.broker.expect(Command.READY)
        self.assertEqual((ready.service, ready.credit), (b"triple", 5))
        self.broker.send(identity, self.jobs(*[(b"t%d" % i, i) for i in range(5)]))
        replies = {}
        while len(replies) < 5:
            _, reply = self.broker.expect(Command.REPLY)
            replies[reply.token] = msgpack.unpackb(reply.body[0])
        self.assertEqual(replies, {b"t%d" % i: 3 * i for i in range(5)})
        # A job with a deadline, a big body in a frame of its own, and one with no body at all.
        big = b"z" * 5000
        self.broker.send(identity, lambda w: w.job(b"big", msgpack.packb(big), deadline_ms=9))
        self.assertEqual(msgpack.unpackb(self.broker.expect(Command.REPLY)[1].body[0]), 3 * big)
        self.broker.send(identity, lambda w: w.job(b"none", []))
        self.assertEqual(msgpack.unpackb(self.broker.expect(Command.REPLY)[1].body[0]), "nothing")

    def test_malformed_message_from_the_broker_is_ignored_whole(self):
        ran = []
        worker = self.worker(credit=2)
        worker.handle("log", lambda x: ran.append(x) or x)
        worker.start()
        identity, _ = self.broker.expect(Command.READY)
        job = b"\x22\x03bad\x00" + inline(msgpack.packb("bad"))
        for frames in (message(job, b"\x22\x01"),  # a good JOB, then one cut short
                       message(job, frames=[b"unclaimed"]),
                       message(job, b"\x99"),  # an unknown command
                       [b"", b"MDPW01", b"\x02", b"token", b"", msgpack.packb("mdp")]):
            self.broker.send_frames(identity, frames)
        self.broker.send(identity, self.jobs((b"good", "good")))
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])), (b"good", "good"))
        self.assertEqual(ran, ["good"])
        self.assertEqual(worker.stats()["malformed"], 4)
        self.assertEqual(worker.stats()["reconnects"], 0)

    def test_stop_says_credit_0_at_once_runs_late_jobs_and_disconnects_after_the_echo(self):
        running, release = threading.Event(), threading.Event()

        def handler(x):
            if x == 1:
                running.set()
                release.wait(PATIENCE)
            return x * 10

        worker = self.worker(credit=2)
        worker.handle("svc", handler)
        worker.start()
        identity, _ = self.broker.expect(Command.READY)
        self.broker.send(identity, self.jobs((b"t1", 1)))
        self.assertTrue(running.wait(PATIENCE), too_slow("the job reaching the handler", PATIENCE))
        stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
        stopper.start()
        self.addCleanup(stopper.join)
        # At once: while the job in hand still runs.
        _, credit = self.broker.expect(Command.CREDIT)
        self.assertEqual(credit.credit, 0)
        release.set()
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])), (b"t1", 10))
        # A job the broker sent before it read the CREDIT 0 (we send it only now): the worker
        # has no job left, but no echo yet, so it must still be there to run this one.
        self.broker.send(identity, self.jobs((b"t2", 2)))
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])), (b"t2", 20))
        self.assertTrue(stopper.is_alive(), "the worker left before the broker's echo")
        self.broker.send(identity, lambda w: w.credit(0))
        self.broker.expect(Command.DISCONNECT)
        stopper.join(PATIENCE)
        self.assertFalse(stopper.is_alive(), too_slow("the worker stopping", PATIENCE))
        self.assertEqual(worker.stats()["served"], 2)
        sent = [record.command for records in self.broker.messages for record in records
                if record.command != Command.HEARTBEAT]
        self.assertEqual(sent, [Command.READY, Command.CREDIT, Command.REPLY, Command.REPLY,
                                Command.DISCONNECT])

    def test_stop_waits_for_the_echo_one_liveness_period_at_most(self):
        worker = self.worker(heartbeat_ms=100, liveness=3)
        worker.handle("svc", lambda x: x)
        worker.start()
        identity, _ = self.broker.expect(Command.READY)
        stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
        asked = time.monotonic()
        stopper.start()
        self.addCleanup(stopper.join)
        self.broker.expect(Command.CREDIT, keepalive_to=identity)
        # Heartbeats keep the worker from finding us silent, but the echo never comes.
        self.broker.expect(Command.DISCONNECT, keepalive_to=identity)
        self.assertGreaterEqual(time.monotonic() - asked, 0.3, "3 x 100 ms of waiting")
        stopper.join(PATIENCE)
        self.assertFalse(stopper.is_alive(), too_slow("the worker stopping", PATIENCE))

    def test_disconnect_from_the_broker_ends_the_session_and_it_registers_again(self):
        worker = self.worker(reconnect_ms=0)
        worker.handle("svc", lambda x: x)
        worker.start()
        identity, _ = self.broker.expect(Command.READY)
        # A DISCONNECT, then a JOB of the session it ended, in one message: the job is not run.
        self.broker.send(identity, lambda w: (w.disconnect(), w.job(b"late", b"\x01")))
        again, ready = self.broker.expect(Command.READY)
        self.assertNotEqual(again, identity, "a new socket")
        self.assertEqual(ready.service, b"svc")
        self.broker.send(again, self.jobs((b"t", 5)))
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])), (b"t", 5))
        self.assertEqual((worker.stats()["served"], worker.stats()["reconnects"]), (1, 1))


    def _held_worker(self, credit):
        """A worker of `credit` whose first job ("held") runs until the test releases it."""
        started, release, ran = threading.Event(), threading.Event(), []

        def handler(x):
            ran.append(x)
            if x == "held":
                started.set()
                release.wait(PATIENCE)
            return x

        worker = self.worker(credit=credit, reconnect_ms=50)
        worker.handle("slow", handler)
        worker.start()
        self.addCleanup(release.set)
        identity, _ = self.broker.expect(Command.READY)
        self.broker.send(identity, self.jobs((b"held", "held")))
        self.assertTrue(started.wait(PATIENCE), too_slow("the job reaching the handler", PATIENCE))
        return worker, identity, release, ran

    def test_a_job_beyond_the_credit_is_refused_counted_and_never_run_nor_answered(self):
        worker, identity, release, ran = self._held_worker(credit=1)
        self.broker.send(identity, self.jobs((b"beyond", "beyond")))
        eventually(lambda: worker.stats()["refused_jobs"] == 1, what="the JOB refused")
        release.set()
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual(reply.token, b"held")
        # The credit is free again: the next job is run; the refused one never was.
        self.broker.send(identity, self.jobs((b"next", "next")))
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual(reply.token, b"next")
        self.assertEqual(ran, ["held", "next"])
        self.assertEqual(worker.stats()["reconnects"], 0)

    def test_a_broker_that_keeps_sending_jobs_beyond_credit_is_left_and_registered_with_again(self):
        worker, identity, release, ran = self._held_worker(credit=1)
        # As a hostile broker sent 100,000 of them: none is taken, and the worker leaves.
        self.broker.send(identity, self.jobs(*[(b"flood %d" % i, i) for i in range(1000)]))
        self.broker.expect(Command.DISCONNECT)
        again, ready = self.broker.expect(Command.READY)
        self.assertNotEqual(again, identity, "a new session")
        self.assertEqual(worker.stats()["refused_jobs"], zbroker.worker.REFUSALS_TOLERATED + 1)
        self.assertEqual(ran, ["held"])
        release.set()
        self.broker.send(again, self.jobs((b"new", "new")))
        _, reply = self.broker.expect(Command.REPLY)
        self.assertEqual(reply.token, b"new")

    def test_unexpected_records_are_logged_once_per_kind_and_window_in_short_lines(self):
        watcher = LogWatcher(self, "zbroker.worker")
        worker = self.worker()
        worker.handle("svc", lambda x: x)
        worker.start()
        identity, _ = self.broker.expect(Command.READY)
        sent = 0
        # Fewer messages than the queues hold (1000 each way), so that none is dropped.
        for i in range(200):
            for frames in (message(*[answer_record(b"id", 200)] * 20),
                           message(b"\x99"),  # an unknown command
                           message(frames=[b""] * 200)):  # no record, many frames
                self.broker.send_frames(identity, frames)
                sent += sum(len(frame) for frame in frames)
        self.broker.send(identity, self.jobs((b"good", "good")))
        self.broker.expect(Command.REPLY)
        self.assertEqual(worker.stats()["malformed"], 4400)  # each ANSWER record counts
        lines = list(watcher.lines)
        # One line per kind and window (and a summary per window past), however many came.
        self.assertLessEqual(len([l for l in lines if "ANSWER record" in l]), 3, lines[:5])
        self.assertLessEqual(len([l for l in lines if "malformed" in l]), 6, lines[:5])
        self.assertTrue(all(len(line) <= 400 for line in lines), max(lines, key=len))
        self.assertLess(sum(len(line) for line in lines), sent / 10)


class Heartbeats(BrokerTestCase):
    """Heartbeating itself, so at short intervals: 250 ms, and a patience of 4 of them."""

    heartbeat_ms = 250
    liveness = 4

    def test_heartbeats_go_on_during_a_long_handler(self):
        worker = self.worker()
        worker.handle("slow", lambda seconds: time.sleep(seconds) or "done")
        worker.start()
        self.wait_for_service("slow")
        # Three times the broker's patience (4 x 250 ms): only background heartbeats keep it.
        client = self.client()
        self.assertEqual(client.call("slow", 3.0), "done")
        self.assertEqual(worker.stats()["reconnects"], 0)
        self.assertEqual(client.stats()["totals"]["workers_expired"], 0)

    def test_worker_reconnects_when_the_broker_falls_silent(self):
        worker = self.worker()
        worker.handle("upper", str.upper)
        worker.start()
        self.wait_for_service("upper")
        self.broker.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(self.broker.proc.send_signal, signal.SIGCONT)
        eventually(lambda: worker.stats()["reconnects"] >= 1,
                   what="a reconnect after 4 x 250 ms of silence")
        self.broker.proc.send_signal(signal.SIGCONT)
        self.wait_for_service("upper")
        self.assertEqual(self.client().call("upper", "awake"), "AWAKE")


@unittest.skipUnless(zmq.has("curve"), "this libzmq has no CURVE")
class Curve(BrokerTestCase):
    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.broker_public, broker_secret = zbroker.generate_keypair()
        self.client_keys = zbroker.generate_keypair()
        self.worker_keys = zbroker.generate_keypair()
        key_file = os.path.join(directory.name, "broker.key")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"# test key\npublic = {self.broker_public}\nsecret = {broker_secret}\n")
        self.assertEqual(zbroker.read_keypair(key_file), (self.broker_public, broker_secret))
        authorized = os.path.join(directory.name, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(f"client {self.client_keys[0]}\nworker {self.worker_keys[0]}\n")
        self.broker_args = ("--curve-secret", key_file, "--authorized-keys", authorized)
        super().setUp()

    def keys(self, pair):
        return zbroker.CurveKeys(self.broker_public, *pair)

    def test_client_and_worker_with_listed_keys_talk_curve(self):
        worker = self.worker(curve=self.keys(self.worker_keys))
        worker.handle("upper", str.upper)
        worker.start()
        client = self.client(curve=self.keys(self.client_keys))
        eventually(lambda: client.has_service("upper"), what="the CURVE worker registered")
        self.assertEqual(client.call("upper", "secret"), "SECRET")

    def test_client_key_may_not_read_the_broker_stats(self):
        with self.assertRaises(zbroker.ZbrokerError) as caught:
            self.client(curve=self.keys(self.client_keys)).stats()
        self.assertEqual(caught.exception.status, 403)

    def test_client_without_keys_gets_no_answer(self):
        with self.assertRaises(zbroker.Timeout):
            self.client(timeout=0.3, retries=0).services()

    def test_bad_keys_are_refused_before_any_socket(self):
        with self.assertRaises(ValueError):
            zbroker.CurveKeys(self.broker_public, "too short", self.client_keys[1])


class Examples(BrokerTestCase):
    def example(self, name, *args):
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), PYTHONDONTWRITEBYTECODE="1")
        return [sys.executable, os.path.join(ROOT, "examples", "python", name), "--broker",
                self.endpoint, *args], env

    def test_example_worker_serves_zclient_and_leaves_with_disconnect(self):
        args, env = self.example("worker.py", "--heartbeat-ms", str(self.heartbeat_ms),
                                 "--liveness", str(self.liveness))
        worker = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: worker.poll() is None and (worker.kill(), worker.wait()))
        self.wait_for_service("textstats")
        result = self.zclient("call", "textstats", json.dumps("the cat and the hat\nthe end"))
        self.assertEqual(result.returncode, 0, result.stderr)
        stats = json.loads(result.stdout)
        self.assertEqual((stats["lines"], stats["words"], stats["top"][0]), (2, 7, ["the", 3]))
        self.assertEqual(self.zclient("call", "textstats", "42").returncode, 8)
        worker.terminate()
        _, stderr = worker.communicate(timeout=PATIENCE)
        self.assertEqual(worker.returncode, 0, stderr)
        self.broker.wait_for_line(r"for 'textstats' removed: sent DISCONNECT")

    def test_example_client_calls_zworker(self):
        self.zworker("hello", "stats", "echo")
        args, env = self.example("client.py", "--timeout", str(PATIENCE))
        result = subprocess.run(args, env=env, capture_output=True, text=True,
                                timeout=4 * PATIENCE)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("hello: Hello, Client!", result.stdout)
        self.assertIn("stats: mean 5 stddev 2 min 2 max 9", result.stdout)
        self.assertIn("pipelined: 100 means", result.stdout)

    def test_example_client_reports_a_missing_service(self):
        # The broker answers 503 at the deadline, which is the client's timeout; the client
        # listens 0.5 s longer for it (its grace at 2 s and over), and makes 3 attempts.
        args, env = self.example("client.py", "--timeout", "2")
        result = subprocess.run(args, env=env, capture_output=True, text=True,
                                timeout=4 * PATIENCE)
        self.assertEqual(result.returncode, 1)
        self.assertIn("unavailable (503)", result.stderr)


if __name__ == "__main__":
    unittest.main()
