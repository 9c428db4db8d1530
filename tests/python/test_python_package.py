"""The Python package (python/zbroker) against real zbroker and zworker processes, zclient and
the Python examples. Run: ZBROKER_BIN_DIR=build/release/bin PYTHONPATH=python
python3 -m unittest discover -s tests/python -v"""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
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
from processes import (PATIENCE, START_PATIENCE, Process, binary, start_broker,  # noqa: E402
                       too_slow)
from zbroker import protocol  # noqa: E402

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


class FakeBroker(threading.Thread):
    """A ROUTER on an ephemeral port that records ZBC01 requests and sends only what it is told,
    to see what a client puts on the wire and how it takes odd answers."""

    def __init__(self):
        super().__init__(daemon=True)
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = []  # [identity, "", ZBC01, service, id, headers, body...]
        self.on_request = None  # returns the messages to send for a request
        self._outbox = queue.Queue()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self.start()

    def run(self):
        while not self._stopping.is_set():
            if self.socket.poll(10):
                frames = self.socket.recv_multipart()
                with self._cond:
                    self.requests.append(frames)
                    self._cond.notify_all()
                for message in self.on_request(frames) if self.on_request else []:
                    self.socket.send_multipart(message)
            while not self._outbox.empty():
                self.socket.send_multipart(self._outbox.get())
        self.socket.close()

    @staticmethod
    def answer(request, status=b"200", body=(b"",), request_id=None):
        identity, _, header, service, rid = request[:5]
        return [identity, b"", header, service, rid if request_id is None else request_id, status,
                *body]

    def send(self, message):
        self._outbox.put(message)

    def wait_for_requests(self, count, timeout=PATIENCE):
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(too_slow(f"{count} requests arriving", timeout) +
                                     f"; {len(self.requests)} did")
            return list(self.requests)

    def stop(self):
        self._stopping.set()
        self.join(5)


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

        def enum(name):
            body = re.search(r"enum class %s[^{]*\{(.*?)\};" % name, header, re.S).group(1)
            return {key.upper(): int(value, 0) for key, value in re.findall(r"(\w+) = (\w+),", body)}

        commands = enum("WorkerCommand")
        self.assertEqual(len(commands), 5)
        for name, value in commands.items():
            self.assertEqual(getattr(protocol, name), bytes([value]), name)
        statuses = enum("Status")
        self.assertEqual(len(statuses), 8)
        for name, value in statuses.items():
            self.assertEqual(getattr(protocol, name), value, name)
        self.assertIn(f"kHeartbeatInterval{{{protocol.HEARTBEAT_INTERVAL_MS}}}", header)
        self.assertIn(f"kHeartbeatLiveness = {protocol.HEARTBEAT_LIVENESS};", header)


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
        socket.send_multipart([b"", protocol.MDP_WORKER, protocol.READY, b"fragile"])
        self.wait_for_service("fragile")

        def take_and_die():
            if socket.poll(PATIENCE_MS) and socket.recv_multipart()[2] == protocol.REQUEST:
                socket.send_multipart([b"", protocol.MDP_WORKER, protocol.DISCONNECT])

        dying = threading.Thread(target=take_and_die)
        dying.start()
        self.addCleanup(dying.join)
        with self.assertRaises(zbroker.RetriesExhausted) as caught:
            self.client().call("fragile", 1)
        self.assertEqual(caught.exception.status, 500)


class LazyPirate(unittest.TestCase):
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
        self.assertEqual(len({r[0] for r in requests}), 3, "each attempt on a new socket")
        self.assertEqual(len({r[4] for r in requests}), 3, "each attempt under a new id")
        for r in requests:
            self.assertEqual(r[1:4], [b"", b"ZBC01", b"echo"])
            self.assertEqual(msgpack.unpackb(r[5]), {"deadline_ms": 200})
            self.assertEqual(msgpack.unpackb(r[6]), "hi")
        # 3 attempts of 0.2 s + 0.05 s grace, and 0.05 + 0.1 s backoff between them: never less,
        # and on a loaded machine somewhat more, but nowhere near another attempt's worth more.
        self.assertGreater(elapsed, 0.85)
        self.assertLess(elapsed, 10, f"3 attempts of 0.25 s took {elapsed:.2f} s")

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
        def odd_answers_first(request):
            return [self.fake.answer(request, body=[msgpack.packb("stale")], request_id=b"other"),
                    request[:1] + [b"", b"ZBC01"],
                    self.fake.answer(request, status=b"2x0"),
                    self.fake.answer(request, body=[msgpack.packb("right")])]

        self.fake.on_request = odd_answers_first
        self.assertEqual(self.client(timeout=PATIENCE, retries=0).call("echo", "x"), "right")

    def test_pipeline_keeps_at_most_window_requests_past_the_oldest_unanswered(self):
        results = []
        client = self.client(timeout=PATIENCE)
        runner = threading.Thread(
            target=lambda: results.extend(client.pipeline("echo", range(30), window=10)))
        runner.start()
        self.addCleanup(runner.join, PATIENCE)
        first = self.fake.wait_for_requests(10)
        time.sleep(0.2)  # time to send an 11th, which must not come
        self.assertEqual(len(self.fake.requests), 10, "more than the window in flight")
        # Answers out of order, and one for an id never sent: nothing is yielded before #0.
        self.fake.send(self.fake.answer(first[0], request_id=b"\xff" * 8))
        for request in reversed(first[1:]):
            self.fake.send(self.fake.answer(request, body=[request[6]]))
        time.sleep(0.2)  # time to yield or send more, which must not happen
        self.assertEqual((len(self.fake.requests), results), (10, []))
        self.fake.send(self.fake.answer(first[0], body=[first[0][6]]))
        for count in (20, 30):  # each full answer of the window lets the next ten go
            requests = self.fake.wait_for_requests(count)
            time.sleep(0.1)  # time to send more than the window, which must not happen
            self.assertEqual(len(self.fake.requests), count)
            for request in reversed(requests[count - 10:]):
                self.fake.send(self.fake.answer(request, body=[request[6]]))
        runner.join(PATIENCE)
        self.assertEqual(results, [(200, i) for i in range(30)])

    def test_pipeline_request_without_an_answer_yields_no_reply(self):
        self.fake.on_request = lambda r: [] if msgpack.unpackb(r[6]) == 1 else [
            self.fake.answer(r, body=[r[6]])]
        # The timeout is how long #1 goes unanswered, and how long #0 and #2 have to be answered.
        results = list(self.client().pipeline("echo", [0, 1, 2], window=3, timeout=3))
        self.assertEqual(results, [(200, 0), (0, None), (200, 2)])


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
        self.broker.wait_for_line(r"ready for 'double' with credit 8")
        results = list(self.client().pipeline("double", range(100), window=50))
        self.assertEqual(results, [(200, 2 * i) for i in range(100)])

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

    def test_stop_finishes_the_request_in_hand_then_sends_disconnect(self):
        started = threading.Event()
        worker = self.worker()
        worker.handle("slow", lambda seconds: started.set() or time.sleep(seconds) or "done")
        worker.start()
        self.wait_for_service("slow")
        answers = []

        def call_slow():
            with zbroker.Client(self.endpoint, timeout=PATIENCE, retries=0) as other:
                answers.append(other.call("slow", 0.5))

        caller = threading.Thread(target=call_slow)
        caller.start()
        self.addCleanup(caller.join)
        self.assertTrue(started.wait(PATIENCE), too_slow("the request reaching the handler",
                                                         PATIENCE))
        worker.stop(timeout=PATIENCE)
        caller.join(PATIENCE)
        self.assertEqual(answers, ["done"])
        self.broker.wait_for_line(r"for 'slow' removed: sent DISCONNECT")
        # The broker may forget a service without workers: gone or 0 workers, both say so.
        self.assertEqual(self.client().services().get("slow", {}).get("workers", 0), 0)


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
