"""Several brokers, no single point of failure (issue 12), in the Python package: the idempotency
key on the wire (REQUEST and JOB), the client's failover between brokers, the worker's sessions
with several brokers, its credit split and its idempotency window.

Most tests use pyzmq ROUTERs as brokers, so that they show exactly what goes on the wire and do
not depend on the broker's timing; the others run real zbroker processes. Run:
ZBROKER_BIN_DIR=build/release/bin PYTHONPATH=python python3 -m unittest discover -s tests/python
-p "test_*.py" -v"""
import collections
import os
import signal
import struct
import sys
import threading
import time
import unittest

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
sys.path.insert(0, os.path.join(ROOT, "python"))

import zbroker  # noqa: E402
from processes import PATIENCE, start_broker, too_slow  # noqa: E402
from test_python_package import (LogWatcher, ScriptedBroker, bind, eventually, inline,  # noqa: E402
                                 message, stop_process)
from zbroker import protocol  # noqa: E402
from zbroker.client import endpoint_list  # noqa: E402
from zbroker.protocol import Command  # noqa: E402
from zbroker.worker import credit_shares  # noqa: E402

HEARTBEAT_MS = 1000  # as in test_python_package: patient enough for sanitizer builds
LIVENESS = 5


def echo(record):
    return protocol.OK, list(record.body)


class FakeBroker(threading.Thread):
    """A ROUTER on loopback that answers each REQUEST with `answer(record)`: (status, body), or
    None for no answer at all. Records every REQUEST it reads. stop() closes its socket, which
    drops every connection to it, as a broker that dies does."""

    def __init__(self, test, answer=echo, endpoint="tcp://127.0.0.1:*"):
        super().__init__(daemon=True)
        self.answer = answer
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.linger = 0
        bind(self.socket, endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = []  # every REQUEST record read, in order
        self.malformed = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        test.addCleanup(self.stop)
        self.start()

    def run(self):
        while not self._stopping.is_set():
            if not self.socket.poll(10):
                continue
            identity, *frames = self.socket.recv_multipart()
            try:
                records = protocol.decode(frames)
            except protocol.MalformedMessage as e:
                self.malformed.append(str(e))
                continue
            writer = protocol.Writer()
            with self._cond:
                for record in records:
                    self.requests.append(record)
                    answer = self.answer(record)
                    if answer is not None:
                        writer.answer(record.id, *answer)
                self._cond.notify_all()
            if not writer.empty:
                self.socket.send_multipart([identity, *writer.take()])
        self.socket.close()

    def wait_for_requests(self, count, timeout=PATIENCE):
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(too_slow(f"{count} request(s) reaching {self.endpoint}",
                                              timeout) + f"; {len(self.requests)} did")
            return list(self.requests)

    def stop(self):
        self._stopping.set()
        if self.is_alive():
            self.join(PATIENCE)


class Router(ScriptedBroker):
    """A broker of a worker that a test drives record by record, on an endpoint it can bind
    again after close(), as a broker that restarts."""

    def close(self):
        self.socket.close()


def stop_worker(worker, routers):
    """Stops `worker` as its brokers would have it: each echoes its CREDIT 0."""
    stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
    stopper.start()
    deadline = time.monotonic() + PATIENCE
    while stopper.is_alive() and time.monotonic() < deadline:
        for router in routers:
            if router.socket.closed or not router.socket.poll(10):
                continue
            identity, *frames = router.socket.recv_multipart()
            if any(r.command == Command.CREDIT for r in protocol.decode(frames)):
                router.send(identity, lambda w: w.credit(0))
    stopper.join()


def job(token, value, key=None):
    return lambda writer: writer.job(token, msgpack.packb(value), idempotency_key=key)


class IdempotencyKeyOnTheWire(unittest.TestCase):
    def test_constants_match_shared_protocol_hpp(self):
        with open(os.path.join(ROOT, "shared", "protocol.hpp")) as f:
            header = f.read()
        self.assertIn(f"kMaxIdempotencyKeySize = {protocol.MAX_IDEMPOTENCY_KEY_SIZE};", header)
        self.assertIn(f'kDrainingBody = "{protocol.DRAINING_BODY.decode()}";', header)
        self.assertIn(f'kHeaderIdempotencyKey = "{protocol.HEADER_IDEMPOTENCY_KEY}";', header)
        self.assertEqual((protocol.HAS_IDEMPOTENCY_KEY, protocol.MAX_IDEMPOTENCY_KEY_SIZE,
                          protocol.DRAINING_BODY), (0x08, 255, b"draining"))

    def test_request_carries_the_key_after_the_fairness_key(self):
        # REQUEST: flags, [deadline_ms u32], [priority u8], [fairness_key short],
        # [idempotency_key short], id, service, body
        writer = protocol.Writer()
        writer.request(b"r", "s", b"hi", 2000, priority=3, fairness_key="t",
                       idempotency_key="order-\u00e9")
        key = "order-\u00e9".encode()
        self.assertEqual(writer.take(), message(
            b"\x11" + b"\x0f" + struct.pack("<I", 2000) + b"\x03" + b"\x01t" +
            bytes([len(key)]) + key + b"\x01r" + b"\x01s" + inline(b"hi")))
        writer.request(b"r", "s", b"", idempotency_key=b"k" * 255)
        frames = writer.take()
        self.assertEqual(frames, message(b"\x11\x08\xff" + b"k" * 255 + b"\x01r\x01s" +
                                         inline(b"")))
        [request] = protocol.decode(frames)
        self.assertEqual((request.idempotency_key, request.fairness_key, request.id),
                         (b"k" * 255, b"", b"r"))
        [plain] = protocol.decode(message(b"\x11\x00\x01r\x01s" + inline(b"")))
        self.assertEqual(plain.idempotency_key, b"")

    def test_job_carries_the_key_after_the_deadline(self):
        # JOB: token, flags, [deadline_ms u32], [idempotency_key short], body
        writer = protocol.Writer()
        writer.job(b"tok", b"x", deadline_ms=7, idempotency_key="k1")
        writer.job(b"tok", b"x", idempotency_key=b"k2")
        writer.job(b"tok", b"x")
        frames = writer.take()
        self.assertEqual(frames, message(
            b"\x22\x03tok\x09" + struct.pack("<I", 7) + b"\x02k1" + inline(b"x"),
            b"\x22\x03tok\x08\x02k2" + inline(b"x"),
            b"\x22\x03tok\x00" + inline(b"x")))
        self.assertEqual([(r.deadline_ms, r.idempotency_key) for r in protocol.decode(frames)],
                         [(7, b"k1"), (None, b"k2"), (None, b"")])

    def test_empty_key_or_unknown_job_flag_is_malformed(self):
        cases = {
            "a REQUEST with an empty key": message(b"\x11\x08\x00\x01r\x01s" + inline(b"")),
            "a JOB with an empty key": message(b"\x22\x01t\x08\x00" + inline(b"")),
            "a JOB with a priority": message(b"\x22\x01t\x02\x05" + inline(b"")),
            "a JOB with a fairness key": message(b"\x22\x01t\x04\x01k" + inline(b"")),
            "a JOB with flag 0x10": message(b"\x22\x01t\x10" + inline(b"")),
            "a REQUEST with flag 0x10": message(b"\x11\x18\x01k\x01r\x01s" + inline(b"")),
            "a key cut short": message(b"\x22\x01t\x08\x05abc"),
        }
        for what, frames in cases.items():
            with self.subTest(what), self.assertRaises(protocol.MalformedMessage):
                protocol.decode(frames)

    def test_a_key_zb1_cannot_carry_is_a_value_error_and_writes_nothing(self):
        writer = protocol.Writer()
        writer.heartbeat()
        before = (len(writer), writer.records)
        for key in ("", b"", "k" * 256, "\u00e9" * 128, 7, ["k"]):
            with self.subTest(key=key):
                with self.assertRaises(ValueError) as caught:
                    writer.request(b"id", "svc", b"", idempotency_key=key)
                self.assertIn("idempotency_key", str(caught.exception))
                with self.assertRaises(ValueError):
                    writer.job(b"t", b"", idempotency_key=key)
        self.assertEqual((len(writer), writer.records), before)

    def test_only_a_503_with_the_draining_body_is_a_draining_answer(self):
        self.assertTrue(protocol.is_draining(503, [b"draining"]))
        self.assertFalse(protocol.is_draining(503, [b""]))  # at the deadline: no worker
        self.assertFalse(protocol.is_draining(503, []))
        self.assertFalse(protocol.is_draining(504, [b"draining"]))
        self.assertFalse(protocol.is_draining(200, [b"draining"]))


class Configuration(unittest.TestCase):
    def test_endpoints_are_a_list_or_one_string_with_commas(self):
        self.assertEqual(endpoint_list("tcp://a:1"), ["tcp://a:1"])
        self.assertEqual(endpoint_list("tcp://a:1, tcp://b:2"), ["tcp://a:1", "tcp://b:2"])
        self.assertEqual(endpoint_list(("tcp://a:1", "tcp://b:2")), ["tcp://a:1", "tcp://b:2"])
        for bad in ("", [], "tcp://a:1,", "tcp://a:1,,tcp://b:2", "tcp://a:1,tcp://a:1"):
            with self.subTest(endpoints=bad), self.assertRaises(ValueError):
                endpoint_list(bad)
        with self.assertRaises(ValueError):
            zbroker.Client([])
        with self.assertRaises(ValueError):
            zbroker.Worker("tcp://a:1,tcp://a:1")

    def test_credit_is_split_as_the_cpp_worker_splits_it(self):
        # C // N each, the remainder one each to the first brokers, and at least 1.
        cases = {(1, 1): [1], (4, 1): [4], (3, 3): [1, 1, 1], (5, 3): [2, 2, 1], (7, 2): [4, 3],
                 (1, 3): [1, 1, 1], (2, 3): [1, 1, 1], (10, 4): [3, 3, 2, 2]}
        for (credit, brokers), shares in cases.items():
            with self.subTest(credit=credit, brokers=brokers):
                self.assertEqual(credit_shares(credit, brokers), shares)
                self.assertEqual(sum(shares), max(credit, brokers))

    def test_a_bad_idempotency_key_raises_before_anything_is_sent(self):
        fake = FakeBroker(self)
        client = zbroker.Client(fake.endpoint, timeout=PATIENCE, retries=0)
        self.addCleanup(client.close)
        for key in ("", b"k" * 256, 5):
            with self.subTest(key=key):
                with self.assertRaises(ValueError):
                    client.call("echo", 1, idempotency_key=key)
                with self.assertRaises(ValueError):
                    client.call_raw("echo", b"", idempotency_key=key)
                with self.assertRaises(ValueError):
                    client.request("echo", b"", idempotency_key=key)
                with self.assertRaises(ValueError):
                    next(client.pipeline("echo", [1], idempotency_key=lambda payload: key))
        # One key for a whole pipeline would have a worker run its first request only.
        with self.assertRaises(ValueError):
            next(client.pipeline("echo", [1], idempotency_key="same-for-all"))
        self.assertEqual(client.call("echo", "after"), "after")
        self.assertEqual([r.body for r in fake.requests], [[msgpack.packb("after")]])


class ClientOnSeveralBrokers(unittest.TestCase):
    """The client against FakeBrokers: where each request goes, and with which id and key."""

    def client(self, *fakes, **options):
        options.setdefault("timeout", PATIENCE)
        options.setdefault("retries", 0)
        client = zbroker.Client([fake.endpoint for fake in fakes], **options)
        self.addCleanup(client.close)
        return client

    def until_every_broker_answered(self, client, *fakes):
        """Calls until each fake has had a request: then every connection is known to be up."""
        deadline = time.monotonic() + PATIENCE
        while not all(fake.requests for fake in fakes):
            self.assertLess(time.monotonic(), deadline, too_slow("every broker up", PATIENCE))
            self.assertEqual(client.call("echo", "warm"), "warm")
        counts = [len(fake.requests) for fake in fakes]
        return counts

    def test_a_single_endpoint_is_one_broker_as_before(self):
        # No failover: a draining answer is the answer, and nothing is sent twice.
        fake = FakeBroker(self, lambda record: (503, [protocol.DRAINING_BODY]))
        client = self.client(fake, retries=2)
        with self.assertRaises(zbroker.Unavailable):
            client.call("echo", 1)
        self.assertEqual(len(fake.requests), 1)

    def test_requests_go_round_robin_with_their_key(self):
        a, b = FakeBroker(self), FakeBroker(self)
        client = self.client(a, b)
        before = self.until_every_broker_answered(client, a, b)
        for i in range(10):
            self.assertEqual(client.call("echo", i, idempotency_key=f"key-{i}"), i)
        got = [[(msgpack.unpackb(r.body[0]), r.idempotency_key) for r in fake.requests[count:]]
               for fake, count in zip((a, b), before)]
        self.assertEqual(sorted(got[0] + got[1]), [(i, b"key-%d" % i) for i in range(10)])
        self.assertEqual((len(got[0]), len(got[1])), (5, 5), "one each in turn")
        sockets = [broker.socket for broker in client._brokers]
        self.assertEqual([s.getsockopt(zmq.HEARTBEAT_IVL) for s in sockets], [2500, 2500])
        self.assertEqual([s.getsockopt(zmq.HEARTBEAT_TIMEOUT) for s in sockets], [7500, 7500])

    def test_a_draining_broker_s_request_goes_to_another_with_its_id_and_key(self):
        draining = FakeBroker(self, lambda record: (503, [protocol.DRAINING_BODY])
                              if record.body != [msgpack.packb("warm")] else echo(record))
        other = FakeBroker(self)
        client = self.client(draining, other)
        counts = self.until_every_broker_answered(client, draining, other)
        # Two calls: one of them meets the draining broker, which gets nothing after it.
        self.assertEqual([client.call("echo", i, idempotency_key=f"k{i}") for i in range(2)],
                         [0, 1])
        [refused] = draining.requests[counts[0]:]
        resent = [r for r in other.requests if r.id == refused.id]
        self.assertEqual([(r.idempotency_key, r.body) for r in resent],
                         [(refused.idempotency_key, refused.body)])
        self.assertEqual([client.call("echo", i) for i in range(4)], list(range(4)))
        self.assertEqual(len(draining.requests), counts[0] + 1, "avoided once it said draining")

    def test_a_pipeline_sends_a_draining_broker_s_requests_to_another(self):
        draining = FakeBroker(self, lambda record: (503, [protocol.DRAINING_BODY])
                              if record.body != [msgpack.packb("warm")] else echo(record))
        other = FakeBroker(self)
        client = self.client(draining, other)
        counts = self.until_every_broker_answered(client, draining, other)
        results = list(client.pipeline("echo", range(100), window=20,
                                       idempotency_key=lambda i: f"k{i}"))
        self.assertEqual(results, [(200, i) for i in range(100)])
        refused = draining.requests[counts[0]:]
        self.assertGreater(len(refused), 0, "the first window went to both brokers")
        by_id = {r.id: r for r in other.requests}
        for r in refused:
            self.assertEqual((by_id[r.id].idempotency_key, by_id[r.id].body),
                             (r.idempotency_key, r.body))

    def test_every_broker_draining_answers_503_at_the_timeout(self):
        fakes = [FakeBroker(self, lambda record: (503, [protocol.DRAINING_BODY]))
                 for _ in range(2)]
        client = self.client(*fakes, timeout=0.5)
        response = client.request("echo", b"x")
        self.assertEqual(response, (503, []))
        self.assertEqual([len(fake.requests) for fake in fakes], [1, 1], "once to each")
        self.assertEqual(fakes[0].requests[0].id, fakes[1].requests[0].id)
        # Both avoided now: the next request waits for another broker, then is answered 503
        # by the client itself, as they would have.
        with self.assertRaises(zbroker.Unavailable):
            client.call("echo", 1)
        self.assertEqual(list(client.pipeline("echo", [1, 2], timeout=0.5)),
                         [(503, None), (503, None)])
        self.assertEqual([len(fake.requests) for fake in fakes], [1, 1])

    def test_requests_of_a_broker_that_drops_go_to_another_with_their_id_and_key(self):
        silent = threading.Event()
        dying = FakeBroker(self, lambda record: None if silent.is_set() else echo(record))
        other = FakeBroker(self)
        client = self.client(dying, other)
        counts = self.until_every_broker_answered(client, dying, other)
        silent.set()
        log = LogWatcher(self, "zbroker.client")
        results = []
        runner = threading.Thread(target=lambda: results.extend(
            [client.call("echo", "single", idempotency_key="single")] +
            list(client.pipeline("echo", range(40), window=40,
                                 idempotency_key=lambda i: f"k{i}"))))
        runner.start()
        self.addCleanup(runner.join, PATIENCE)
        # The call, or the pipeline's first window, has requests at the dying broker: it dies.
        held = dying.wait_for_requests(counts[0] + 1)[counts[0]:]
        dying.stop()
        runner.join(PATIENCE)
        self.assertFalse(runner.is_alive(), too_slow("the requests answered", PATIENCE))
        self.assertEqual(results, ["single"] + [(200, i) for i in range(40)])
        log.wait_for(r"again, to another broker: the connection to .* dropped")
        held = dying.requests[counts[0]:]
        by_id = {r.id: r for r in other.requests}
        for r in held:
            self.assertEqual((by_id[r.id].idempotency_key, by_id[r.id].body),
                             (r.idempotency_key, r.body), "sent again unchanged")

    def test_a_retry_after_silence_goes_to_the_next_broker(self):
        silent = threading.Event()
        fakes = [FakeBroker(self, lambda record: None if silent.is_set() else echo(record))
                 for _ in range(2)]
        client = self.client(*fakes, timeout=0.3, retries=1, backoff=0.01)
        counts = self.until_every_broker_answered(client, *fakes)
        silent.set()
        with self.assertRaises(zbroker.Timeout):
            client.call("echo", 1)
        attempts = [fake.requests[count:] for fake, count in zip(fakes, counts)]
        self.assertEqual([len(a) for a in attempts], [1, 1], "one attempt at each broker")
        self.assertNotEqual(attempts[0][0].id, attempts[1][0].id, "a retry has a new id")

    def test_a_request_waits_for_a_broker_to_come_up(self):
        fake = FakeBroker(self)
        endpoint = fake.endpoint
        other = FakeBroker(self)
        fake.stop()
        other.stop()  # both down: the client's requests wait
        client = self.client(fake, other, timeout=PATIENCE)
        answers = []
        caller = threading.Thread(target=lambda: answers.append(client.call("echo", "late")))
        caller.start()
        self.addCleanup(caller.join, PATIENCE)
        FakeBroker(self, endpoint=endpoint)  # one comes back
        caller.join(PATIENCE)
        self.assertEqual(answers, ["late"])


class WorkerOnSeveralBrokers(unittest.TestCase):
    """The Python worker against Routers: its sessions, credit split and idempotency window."""

    def worker(self, routers, **options):
        options.setdefault("heartbeat_ms", HEARTBEAT_MS)
        options.setdefault("liveness", 100)  # the routers say nothing unless told
        options.setdefault("reconnect_ms", 100)
        worker = zbroker.Worker([router.endpoint for router in routers], **options)
        self.addCleanup(stop_worker, worker, routers)
        return worker

    def test_credit_is_split_over_the_brokers_in_ready(self):
        for credit, expected in ((3, [1, 1, 1]), (5, [2, 2, 1]), (1, [1, 1, 1])):
            with self.subTest(credit=credit):
                routers = [Router(self) for _ in range(3)]
                worker = self.worker(routers, credit=credit)
                worker.handle("a", lambda x: x)
                worker.handle("b", lambda x: x)
                worker.start()
                for router, share in zip(routers, expected):
                    readies = sorted((r.service, r.credit) for _, r in
                                     (router.expect(Command.READY) for _ in range(2)))
                    self.assertEqual(readies, [(b"a", share), (b"b", share)])
                stop_worker(worker, routers)

    def test_jobs_from_every_broker_are_served(self):
        routers = [Router(self) for _ in range(2)]
        worker = self.worker(routers, credit=2)
        worker.handle("double", lambda x: 2 * x)
        worker.start()
        for i, router in enumerate(routers):
            identity, ready = router.expect(Command.READY)
            self.assertEqual(ready.credit, 1)
            router.send(identity, job(b"t%d" % i, 10 + i))
            _, reply = router.expect(Command.REPLY)
            self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])),
                             (b"t%d" % i, 2 * (10 + i)))

    def test_the_same_key_twice_runs_the_handler_once_and_both_get_its_reply(self):
        router = Router(self)
        calls = []
        worker = self.worker([router], credit=4)
        worker.handle("count", lambda x: calls.append(x) or len(calls))
        worker.start()
        identity, _ = router.expect(Command.READY)
        replies = []
        for token, key in ((b"1", "k"), (b"2", "k"), (b"3", "other"), (b"4", None), (b"5", None)):
            router.send(identity, job(token, token.decode(), key))
            _, reply = router.expect(Command.REPLY)
            replies.append((reply.token, msgpack.unpackb(reply.body[0])))
        self.assertEqual(replies, [(b"1", 1), (b"2", 1), (b"3", 2), (b"4", 3), (b"5", 4)])
        self.assertEqual(calls, ["1", "3", "4", "5"])
        self.assertEqual(worker.stats()["duplicates_skipped"], 1)
        self.assertEqual(worker.stats()["served"], 4)

    def test_a_key_still_running_is_answered_with_its_reply_when_done(self):
        router = Router(self)
        running, release = threading.Event(), threading.Event()
        calls = []

        def slow(x):
            calls.append(x)
            running.set()
            release.wait(PATIENCE)
            return f"done {x}"

        worker = self.worker([router], credit=2)
        worker.handle("slow", slow)
        worker.start()
        identity, _ = router.expect(Command.READY)
        router.send(identity, job(b"first", 1, "k"))
        self.assertTrue(running.wait(PATIENCE), too_slow("the job reaching the handler", PATIENCE))
        router.send(identity, job(b"again", 2, "k"))
        eventually(lambda: worker.stats()["duplicates_skipped"] == 1,
                   what="the second job taken for the first")
        release.set()
        replies = {}
        for _ in range(2):
            _, reply = router.expect(Command.REPLY)
            replies[reply.token] = msgpack.unpackb(reply.body[0])
        self.assertEqual(replies, {b"first": "done 1", b"again": "done 1"})
        self.assertEqual(calls, [1])

    def test_a_key_answered_through_one_broker_is_not_run_again_through_another(self):
        # What a client's failover looks like to a worker attached to both brokers.
        routers = [Router(self) for _ in range(2)]
        calls = []
        worker = self.worker(routers)
        worker.handle("pay", lambda x: calls.append(x) or f"paid {x}")
        worker.start()
        identities = [router.expect(Command.READY)[0] for router in routers]
        routers[0].send(identities[0], job(b"t", 5, "order-5"))
        self.assertEqual(msgpack.unpackb(routers[0].expect(Command.REPLY)[1].body[0]), "paid 5")
        routers[1].send(identities[1], job(b"u", 5, "order-5"))
        _, reply = routers[1].expect(Command.REPLY)
        self.assertEqual((reply.token, msgpack.unpackb(reply.body[0])), (b"u", "paid 5"))
        self.assertEqual(calls, [5])

    def test_the_window_keeps_the_latest_recent_replies(self):
        router = Router(self)
        calls = []
        worker = self.worker([router], recent_replies=2)
        worker.handle("run", lambda x: calls.append(x) or x)
        worker.start()
        identity, _ = router.expect(Command.READY)
        for i, key in enumerate(["k1", "k2", "k3", "k1", "k3"]):
            router.send(identity, job(b"%d" % i, key, key))
            router.expect(Command.REPLY)
        self.assertEqual(calls, ["k1", "k2", "k3", "k1"], "k1 was forgotten, k3 was not")

    def test_recent_replies_0_keeps_none(self):
        router = Router(self)
        calls = []
        worker = self.worker([router], recent_replies=0)
        worker.handle("run", lambda x: calls.append(x) or x)
        worker.start()
        identity, _ = router.expect(Command.READY)
        for token in (b"1", b"2"):
            router.send(identity, job(token, "same", "k"))
            router.expect(Command.REPLY)
        self.assertEqual(calls, ["same", "same"])

    def test_a_dropped_connection_registers_again_at_once(self):
        # Liveness is 100 heartbeats: only the dropped connection can bring the READY in time.
        router = Router(self)
        endpoint = router.endpoint
        worker = self.worker([router])
        worker.handle("svc", lambda x: x)
        worker.start()
        first, _ = router.expect(Command.READY)
        router.close()
        back = Router(self, endpoint)
        identity, ready = back.expect(Command.READY)
        self.assertEqual((ready.service, ready.credit), (b"svc", 1))
        self.assertNotEqual(identity, first, "a new socket")
        back.send(identity, job(b"t", 7))
        self.assertEqual(msgpack.unpackb(back.expect(Command.REPLY)[1].body[0]), 7)
        self.assertGreaterEqual(worker.stats()["reconnects"], 1)
        stop_worker(worker, [back])


class SeveralRealBrokers(unittest.TestCase):
    """Python worker and client on two real zbroker processes."""

    def start_broker(self, *args):
        broker, endpoint = start_broker("--heartbeat-ms", str(HEARTBEAT_MS), "--liveness",
                                        str(LIVENESS), *args)
        self.addCleanup(stop_process, broker)
        return broker, endpoint

    def worker(self, endpoints, handler, **options):
        worker = zbroker.Worker(endpoints, heartbeat_ms=HEARTBEAT_MS, liveness=LIVENESS,
                                reconnect_ms=100, **options)
        worker.handle("echo", handler)
        self.addCleanup(worker.stop, PATIENCE)
        return worker.start()

    def client(self, endpoints, **options):
        client = zbroker.Client(endpoints, timeout=PATIENCE, retries=0, **options)
        self.addCleanup(client.close)
        return client

    def test_a_broker_killed_mid_pipeline_costs_no_request(self):
        (first, a), (second, b) = self.start_broker(), self.start_broker()
        killed = threading.Event()

        def echo_and_kill(x):
            if x == 100 and not killed.is_set():
                killed.set()
                first.proc.kill()  # SIGKILL: its requests, queued or at this worker, are lost
            return x

        self.worker([a, b], echo_and_kill, credit=3)
        # The credit split, as the brokers saw it: 2 for the first, 1 for the second.
        first.wait_for_line(r"ready for 'echo' with credit 2\b")
        second.wait_for_line(r"ready for 'echo' with credit 1\b")
        log = LogWatcher(self, "zbroker.client")
        client = self.client([a, b])
        results = list(client.pipeline("echo", range(400), window=40))
        self.assertTrue(killed.is_set())
        self.assertEqual(results, [(200, i) for i in range(400)])
        # The client saw the connection drop before the pipeline ended: until it does, it sends
        # every other request to the dead broker, which can only be answered by sending it
        # again. Whether the broker held requests at its death need not be so (the worker may
        # have emptied its queue), so "sending N request(s) again" is not awaited.
        self.assertIn(f"connection to broker {a} dropped: reconnecting", log.lines)

    def test_a_draining_broker_under_pipeline_load_costs_no_request(self):
        # A long drain, so that the requests it holds finish: only the new ones are refused.
        (first, a), (second, b) = [
            self.start_broker("--drain-timeout-ms", str(int(PATIENCE * 1000))) for _ in range(2)]
        drained = threading.Event()
        runs = []  # every request the handler ran; one handler thread appends

        def echo_and_drain(x):
            runs.append(x)
            if x == 100 and not drained.is_set():
                drained.set()
                first.proc.send_signal(signal.SIGTERM)
            return x

        self.worker([a, b], echo_and_drain)
        for broker in (first, second):
            broker.wait_for_line(r"ready for 'echo' with credit 1\b")
        client = self.client([a, b])
        results = list(client.pipeline("echo", range(400), window=40))
        self.assertTrue(drained.is_set())
        first.wait_for_line(r"draining: refusing new requests")
        self.assertEqual(first.proc.wait(PATIENCE), 0)
        # What the test is about: nothing lost, nothing run twice. Whether the client read a
        # 503 "draining" or only saw the connection drop depends on timing (the drain may end
        # before any new request reaches the broker), so neither is awaited. Once the drained
        # broker has exited and every answer is in, no run is still to come.
        errors = [(i, r) for i, r in enumerate(results) if r != (200, i)]
        self.assertEqual(errors, [])
        twice = sorted(x for x, count in collections.Counter(runs).items() if count > 1)
        self.assertEqual(twice, [], "requests run twice")
        self.assertEqual(sorted(runs), list(range(400)))

    def test_the_same_key_twice_through_a_broker_runs_the_handler_once(self):
        _, a = self.start_broker()
        calls = []
        worker = self.worker(a, lambda x: calls.append(x) or len(calls))
        client = self.client(a)
        eventually(lambda: client.has_service("echo"), what="the worker registered")
        self.assertEqual([client.call("echo", "x", idempotency_key="k") for _ in range(2)],
                         [1, 1])
        self.assertEqual(client.call("echo", "y", idempotency_key="other"), 2)
        self.assertEqual(calls, ["x", "y"])
        self.assertEqual(worker.stats()["duplicates_skipped"], 1)


if __name__ == "__main__":
    unittest.main()
