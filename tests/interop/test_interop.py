"""Interop: zbroker with Majordomo peers written from the spec (pyzmq), and zbroker's own
client and worker with those peers. Run: ZBROKER_BIN_DIR=build/debug/bin python3 -m unittest"""
import json
import subprocess
import threading
import time
import unittest

import msgpack
import zmq

from mdp import DISCONNECT, MDPW, PATIENCE_MS, MdpClient, MdpWorker, ZbcClient
from processes import PATIENCE, Process, binary, start_broker, too_slow


def echo(body):
    return body


class BrokerTestCase(unittest.TestCase):
    broker_args = ()

    def setUp(self):
        self.ctx = zmq.Context()
        self.broker, self.endpoint = start_broker(*self.broker_args)
        self.children = []
        self.stop_workers = threading.Event()
        self.threads = []

    def tearDown(self):
        self.stop_workers.set()
        for t in self.threads:
            t.join(PATIENCE)
        for child in self.children:
            child.stop()
        self.broker.stop()
        self.ctx.destroy(linger=0)

    def python_worker(self, service, handler=echo, **kwargs):
        """A Python MDP worker serving in a thread until the test ends."""
        ready = threading.Event()
        worker_box = []

        def run():
            ctx = zmq.Context()
            w = MdpWorker(ctx, self.endpoint, service, handler, **kwargs)
            worker_box.append(w)
            ready.set()
            while not self.stop_workers.is_set() and not w.disconnected:
                w.serve_for(0.1)
            w.close()
            ctx.destroy(linger=0)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        self.assertTrue(ready.wait(PATIENCE), too_slow("a Python worker thread starting", PATIENCE))
        self.wait_for_service(service)
        return worker_box[0]

    def zworker(self, *services, extra=()):
        # The broker's heartbeat interval and liveness (the defaults): a worker that expected
        # heartbeats more often than the broker sends them would reconnect over and over.
        args = [binary("zworker"), "--broker", self.endpoint, *extra]
        for s in services:
            args += ["--service", s]
        child = Process(args)
        self.children.append(child)
        for s in services:
            self.wait_for_service(s)
        return child

    def zclient(self, *args, text=True):
        """zclient's output; by default one patient attempt (a retry would hide a slow reply).
        text=False: stdout and stderr as bytes, to see exactly what --raw prints."""
        if "--timeout" not in args:
            args = ("--timeout", str(PATIENCE_MS), "--retries", "0", *args)
        return subprocess.run([binary("zclient"), "--broker", self.endpoint, *args],
                              capture_output=True, text=text, timeout=3 * PATIENCE)

    def wait_for_service(self, service, timeout=PATIENCE):
        """Asks mmi.service until the broker says 200. The broker answers every question, so
        each answer is awaited until the budget ends (a REQ socket must have it before the next
        question anyway)."""
        client = MdpClient(self.ctx, self.endpoint)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left_ms = int((deadline - time.monotonic()) * 1000)
                reply = client.request(b"mmi.service", service.encode(), timeout_ms=max(left_ms, 1))
                if reply and reply[1] == [b"200"]:
                    return
                if reply is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        finally:
            client.close()
        self.fail(too_slow(f"service {service} becoming available", timeout))


class SpecPeersThroughZbroker(BrokerTestCase):
    def test_req_client_and_python_worker(self):
        self.python_worker("echo")
        client = MdpClient(self.ctx, self.endpoint, zmq.REQ)
        for i in range(20):
            body = f"hello {i}".encode()
            self.assertEqual(client.request(b"echo", body), (b"echo", [body]))
        client.close()

    def test_dealer_client_gets_multipart_bodies_in_order(self):
        self.python_worker("echo")
        client = MdpClient(self.ctx, self.endpoint, zmq.DEALER)
        for i in range(50):
            client.send(b"echo", b"a", str(i).encode())
        replies = [client.recv() for _ in range(50)]
        self.assertNotIn(None, replies, too_slow("50 replies", PATIENCE))
        self.assertEqual(sorted(int(r[1][1]) for r in replies), list(range(50)))
        self.assertTrue(all(r[1][0] == b"a" for r in replies))
        client.close()

    def test_mmi_service_and_unimplemented_mmi(self):
        self.python_worker("echo")
        client = MdpClient(self.ctx, self.endpoint, zmq.REQ)
        self.assertEqual(client.request(b"mmi.service", b"echo"), (b"mmi.service", [b"200"]))
        self.assertEqual(client.request(b"mmi.service", b"nobody"), (b"mmi.service", [b"404"]))
        self.assertEqual(client.request(b"mmi.nothing", b"x"), (b"mmi.nothing", [b"501"]))
        client.close()

    def test_broker_heartbeats_the_python_worker(self):
        worker = self.python_worker("echo", heartbeat_ms=100)
        # The broker heartbeats every 2.5 s (its default), whatever the worker's own interval.
        deadline = time.monotonic() + PATIENCE
        while worker.heartbeats_seen == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreater(worker.heartbeats_seen, 0, too_slow("a broker heartbeat", PATIENCE))

    def test_worker_may_not_register_mmi(self):
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        sock.send_multipart([b"", MDPW, b"\x01", b"mmi.service"])
        self.assertTrue(sock.poll(PATIENCE_MS), too_slow("the broker's DISCONNECT", PATIENCE))
        self.assertEqual(sock.recv_multipart(), [b"", MDPW, DISCONNECT])
        sock.close()

    def test_zbc_client_gets_statuses(self):
        zbc = ZbcClient(self.ctx, self.endpoint)
        zbc.send(b"nobody", b"id-1", b"x", headers=msgpack.packb({"deadline_ms": 100}))
        self.assertEqual(zbc.recv()[:3], (b"nobody", b"id-1", b"503"))
        zbc.send(b"echo", b"id-2", b"x", headers=b"\x91\x01")
        self.assertEqual(zbc.recv()[:3], (b"echo", b"id-2", b"400"))
        self.python_worker("echo")
        zbc.send(b"echo", b"id-3", b"x",
                 headers=msgpack.packb({"deadline_ms": PATIENCE_MS, "trace": "t"}))
        self.assertEqual(zbc.recv(), (b"echo", b"id-3", b"200", [b"x"]))
        zbc.close()


class ZworkerWithSpecClients(BrokerTestCase):
    def test_req_client_calls_zworker_hello_in_msgpack(self):
        self.zworker("hello")
        client = MdpClient(self.ctx, self.endpoint, zmq.REQ)
        service, body = client.request(b"hello", msgpack.packb("Hello, Server!"))
        self.assertEqual(msgpack.unpackb(body[0]), "Hello, Client!")
        client.close()

    def test_req_client_sends_the_seeds_raw_hello_and_gets_raw_bytes_back(self):
        # Byte for byte what the original socket example sends: no msgpack anywhere.
        self.zworker("hello")
        socket = self.ctx.socket(zmq.REQ)
        socket.linger = 0
        socket.connect(self.endpoint)
        socket.send_multipart([b"MDPC01", b"hello", b"Hello, Server!"])
        self.assertTrue(socket.poll(PATIENCE_MS), too_slow("the reply to hello", PATIENCE))
        self.assertEqual(socket.recv_multipart(), [b"MDPC01", b"hello", b"Hello, Client!"])
        socket.close()

    def test_dealer_client_pipelines_to_zworker_stats(self):
        self.zworker("stats", extra=("--threads", "2"))
        client = MdpClient(self.ctx, self.endpoint, zmq.DEALER)
        for _ in range(20):
            client.send(b"stats", msgpack.packb([1, 2, 3, 4]))
        for _ in range(20):
            result = msgpack.unpackb(client.recv()[1][0])
            self.assertEqual((result["min"], result["max"], result["mean"]), (1, 4, 2.5))
        client.close()


class ZclientWithSpecWorker(BrokerTestCase):

    def test_zclient_call_reaches_python_worker(self):
        def reverse(body):
            return [msgpack.packb(msgpack.unpackb(body[0])[::-1])]

        self.python_worker("reverse", reverse)
        result = self.zclient("call", "reverse", '[1, "two", 3.5]')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), [3.5, "two", 1])

    def test_zclient_services_sees_python_worker(self):
        self.python_worker("reverse")
        result = self.zclient("services", "reverse", "nothing")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("reverse", result.stdout)

    def test_zclient_reports_no_worker_with_its_exit_code(self):
        # The broker answers 503 at the deadline, which is zclient's --timeout; zclient listens
        # 500 ms longer for it (its grace at 2 s and over). On a loaded machine the answer may
        # still miss that: a retry (never made after an answer) asks again.
        result = self.zclient("--timeout", "2000", "--retries", "2", "call", "absent", "1")
        self.assertEqual(result.returncode, 3, result.stderr)  # 503


class ZclientWithZworker(BrokerTestCase):
    def test_zclient_call_sends_an_unquoted_string_as_a_msgpack_string(self):
        self.zworker("hello")
        result = self.zclient("call", "hello", "Hello, Server!")
        self.assertEqual((result.returncode, result.stdout), (0, '"Hello, Client!"\n'),
                         result.stderr)
        self.assertEqual(result.stderr, "")  # the note is for --verbose only
        result = self.zclient("call", "--verbose", "hello", "Hello, Server!")
        self.assertEqual((result.returncode, result.stdout), (0, '"Hello, Client!"\n'),
                         result.stderr)
        self.assertIn("not JSON", result.stderr)
        self.assertIn("msgpack string", result.stderr)

    def test_zclient_call_still_refuses_json_that_is_broken(self):
        # An input that starts like JSON ([ { or ") and does not parse is a typo, not a string.
        result = self.zclient("call", "stats", "[1, 2")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("not valid JSON", result.stderr)

    def test_zclient_call_raw_prints_the_reply_bytes(self):
        self.zworker("hello", "echo", "stats")
        result = self.zclient("call", "--raw", "hello", "Hello, Server!", text=False)
        self.assertEqual((result.returncode, result.stdout), (0, b"Hello, Client!"),
                         result.stderr)
        result = self.zclient("call", "--raw", "mmi.service", "echo", text=False)
        self.assertEqual((result.returncode, result.stdout), (0, b"200"), result.stderr)
        result = self.zclient("call", "--raw", "stats", "1 2 3 4", text=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout)["mean"], 2.5)
        # A handler's error is the msgpack map {"error": ...} whatever the input: reported.
        result = self.zclient("call", "--raw", "stats", "1 x", text=False)
        self.assertEqual(result.returncode, 8, result.stderr)
        self.assertIn(b"is not a finite number", result.stderr)
        self.assertEqual(result.stdout, b"")


if __name__ == "__main__":
    unittest.main()
