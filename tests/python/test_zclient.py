"""zclient with input or replies it cannot send or print as they are: numbers out of range,
nesting too deep, service names too long. It must exit with its documented code and a line
saying what was wrong, never abort or crash. And its --help, which must say what it does. Run: ZBROKER_BIN_DIR=build/release/bin
PYTHONPATH=python python3 -m unittest discover -s tests/python -p test_zclient.py -v"""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "interop"))

from processes import PATIENCE, binary  # noqa: E402
from test_python_package import PATIENCE_MS, BrokerTestCase  # noqa: E402

USAGE = 1  # zclient's exit codes (zclient --help)
BAD_REQUEST = 7

# zclient converts at most this many levels of arrays and objects.
MAX_NESTING = 512


def nested_json(depth):
    return "[" * depth + "]" * depth


def nested_msgpack(depth):
    """Arrays of one element, `depth` deep, around nil."""
    return b"\x91" * depth + b"\xc0"


class ZclientRefusals(BrokerTestCase):
    def run_zclient(self, *args, stdin=None, text=True):
        """One patient attempt: what zclient refuses, it refuses before waiting for anything."""
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        return subprocess.run([binary("zclient"), "--broker", self.endpoint, "--timeout",
                               str(PATIENCE_MS), "--retries", "0", *args], capture_output=True,
                              text=text, timeout=3 * PATIENCE, **feed)

    def assert_refused(self, result, code, *words):
        self.assertEqual(result.returncode, code, result.stderr[:2000])  # a crash's is long
        self.assertEqual(result.stdout, "" if isinstance(result.stdout, str) else b"")
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("zclient: "), lines[0])
        for word in words:
            self.assertIn(word, lines[0])

    def test_a_number_out_of_range_exits_1_and_says_how_to_send_it(self):
        for args, stdin in ((["1e400"], None), (["[1e400]"], None), (["-1e400"], None),
                            (['{"x": [1, 1e400]}'], None), ([], "1e400\n"), (["-"], "[1e400]")):
            with self.subTest(args=args, stdin=stdin):
                result = self.run_zclient("call", "echo", *args, stdin=stdin)
                self.assert_refused(result, USAGE, "out of range", "1e400", "as a string",
                                    "--raw")

    def test_json_nested_100000_deep_exits_1_and_512_levels_go_through(self):
        self.zworker("echo")
        result = self.run_zclient("call", "echo", stdin=nested_json(100_000))
        self.assert_refused(result, USAGE, f"deeper than {MAX_NESTING} levels", "--raw")
        result = self.run_zclient("call", "echo", nested_json(MAX_NESTING + 1))
        self.assert_refused(result, USAGE, f"deeper than {MAX_NESTING} levels")
        result = self.run_zclient("call", "echo", stdin=nested_json(MAX_NESTING))
        self.assertEqual(result.returncode, 0, result.stderr[:2000])
        self.assertEqual(result.stdout, nested_json(MAX_NESTING) + "\n")

    def test_a_reply_nested_100000_deep_is_refused_and_given_whole_with_raw(self):
        deep = nested_msgpack(100_000)
        worker = self.worker()
        worker.handle("deep", lambda frames: [deep], raw=True)
        worker.start()
        self.wait_for_service("deep")
        result = self.run_zclient("call", "deep", "1")
        self.assert_refused(result, USAGE, "reply of 'deep'", f"deeper than {MAX_NESTING}",
                            "--raw")
        # The bytes as they are: a handler's {"error": ...} is looked for, and not found.
        result = self.run_zclient("call", "--raw", "deep", "1", text=False)
        self.assertEqual(result.returncode, 0, result.stderr[:2000])
        self.assertEqual(result.stdout, deep)

    def test_a_deep_reply_through_echo_raw_comes_back_whole(self):
        self.zworker("echo")
        deep = nested_msgpack(100_000)
        result = self.run_zclient("call", "--raw", "echo", stdin=deep, text=False)
        self.assertEqual(result.returncode, 0, result.stderr[:2000])
        self.assertEqual(result.stdout, deep)

    def test_a_service_name_over_255_bytes_exits_7_at_once(self):
        # Cut to 255 bytes on the wire, it used to wait the whole --timeout for another service.
        for name in ("s" * 256, "s" * 300, "\u00e9" * 128):
            with self.subTest(length=len(name.encode())):
                result = self.run_zclient("call", name, "1")
                self.assert_refused(result, BAD_REQUEST, f"{len(name.encode())} bytes",
                                    "at most 255")

    def test_a_service_name_of_255_bytes_goes_whole(self):
        name = "s" * 255
        worker = self.worker()
        worker.handle(name, lambda x: x + 1)
        worker.start()
        self.wait_for_service(name)
        result = self.run_zclient("call", name, "41")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "42\n")


class ZclientHelp(unittest.TestCase):
    def test_help_names_the_protocol_requests_go_in(self):
        result = subprocess.run([binary("zclient"), "--help"], capture_output=True, text=True,
                                timeout=PATIENCE)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("msgpack in ZB/1", result.stdout)
        self.assertNotIn("ZBC01", result.stdout)  # what zclient does not speak


if __name__ == "__main__":
    unittest.main()
