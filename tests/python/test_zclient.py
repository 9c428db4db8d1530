"""zclient with input or replies it cannot send or print as they are: numbers out of range,
nesting too deep, service names too long, and names or replies a hostile peer chose. It must
exit with its documented code and a line saying what was wrong, never abort or crash, and show
a peer's text rather than let the terminal act on it. And its --help, which must say what it
does. Run: ZBROKER_BIN_DIR=build/release/bin
PYTHONPATH=python python3 -m unittest discover -s tests/python -p test_zclient.py -v"""
import json
import os
import subprocess
import sys
import unittest

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "interop"))

from processes import PATIENCE, binary  # noqa: E402
from test_python_package import PATIENCE_MS, BrokerTestCase, FakeBroker  # noqa: E402

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


class ZclientAgainstAHostileBroker(unittest.TestCase):
    """zclient showing what a peer chose (service names, statuses, errors, replies): JSON that
    always prints, and text that a terminal shows rather than acts on."""

    # Names a worker may register: escapes that set the title, clear the screen, forge a row;
    # bytes that are not UTF-8; a C1 control (CSI) and a bidirectional override.
    HOSTILE = [b"title\x1b]0;pwned\x07", b"\x1b[2Jclear", b"x\nforged      9", b"bad\xff\xfe",
               "c1\u009b31m".encode(), "\u202egnp.exe".encode()]

    def setUp(self):
        self.fake = FakeBroker()
        self.addCleanup(self.fake.stop)
        self.answers = {}  # service -> reply body

        def answer(request):
            body = self.answers[request[1].service]
            return [self.fake.answer(request, body=[body])]

        self.fake.on_request = answer

    def run_zclient(self, *args):
        return subprocess.run([binary("zclient"), "--broker", self.fake.endpoint, "--timeout",
                               str(PATIENCE_MS), "--retries", "0", *args], capture_output=True,
                              timeout=3 * PATIENCE, stdin=subprocess.DEVNULL)

    def figures(self):
        """mmi.services figures for every hostile name and one honest, packed with the names as
        msgpack str whatever their bytes, as a hostile broker may."""
        services = {name: {"workers": 1, "queued": 0, "in_flight": 0, "orphaned": 0,
                           "served": 3, "errors": {b"504\x1b[1m": 1}}
                    for name in self.HOSTILE + ["\u00e9t\u00e9".encode()]}
        return services

    def assert_shown_not_acted_on(self, output):
        for byte in (b"\x1b", b"\x07", b"\xff", "\u009b".encode(), "\u202e".encode()):
            self.assertNotIn(byte, output)
        text = output.decode()  # all of it UTF-8
        self.assertIn("title\\x1B]0;pwned\\x07", text)
        self.assertIn("\\x1B[2Jclear", text)
        self.assertIn("x\\nforged", text)
        self.assertIn("bad\\xFF\\xFE", text)
        self.assertIn("c1\\xC2\\x9B31m", text)
        self.assertIn("\\xE2\\x80\\xAEgnp.exe", text)
        self.assertIn("\u00e9t\u00e9", text)  # UTF-8 that is text shows as it is
        return text

    def test_stats_json_prints_names_that_are_not_utf8_with_replacement_characters(self):
        # It was: nlohmann's dump() threw type_error.316 and zclient aborted (SIGABRT).
        stats = {"uptime_s": 1, "services": {b"bad\xff": {"workers": 1}, b"ok": {}}}
        self.answers[b"mmi.stats"] = msgpack.packb(stats, use_bin_type=False)
        result = self.run_zclient("stats", "--json")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        printed = json.loads(result.stdout.decode("utf-8"))
        self.assertEqual(printed["services"], {"bad\ufffd": {"workers": 1}, "ok": {}})

    def test_services_table_escapes_what_a_terminal_would_act_on(self):
        # It was: names went to the terminal raw, so a worker could forge rows, clear the
        # screen or set the window title of whoever listed the services.
        self.answers[b"mmi.services"] = msgpack.packb(self.figures(), use_bin_type=False)
        result = self.run_zclient("services")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        text = self.assert_shown_not_acted_on(result.stdout)
        self.assertEqual(len(text.splitlines()), 1 + len(self.HOSTILE) + 1, "a row per service")
        self.assertIn("504\\x1B[1m:1", text)

    def test_stats_tables_escape_what_a_terminal_would_act_on(self):
        stats = {"uptime_s": 1, "services": self.figures(), "totals": {b"evil\x1b[2J": 1},
                 "answers": {b"200\x07": 1}}
        self.answers[b"mmi.stats"] = msgpack.packb(stats, use_bin_type=False)
        result = self.run_zclient("stats")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        text = self.assert_shown_not_acted_on(result.stdout)
        self.assertIn("evil\\x1B[2J 1", text)
        self.assertIn("200\\x07:1", text)

    def test_a_reply_or_handler_error_is_shown_not_acted_on(self):
        self.answers[b"text"] = b"\xc1 not msgpack: \x1b]0;pwned\x07 line\nnext\ttab"
        result = self.run_zclient("call", "text", "1")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(result.stdout,
                         b"\\xC1 not msgpack: \\x1B]0;pwned\\x07 line\nnext\ttab\n")
        self.answers[b"fails"] = msgpack.packb({"error": "\x1b[2J\x1b]0;pwned\x07"})
        result = self.run_zclient("call", "fails", "1")
        self.assertEqual(result.returncode, 8)
        self.assertNotIn(b"\x1b", result.stderr)
        self.assertIn(b"\\x1B[2J\\x1B]0;pwned\\x07", result.stderr)

    def test_mmi_answers_nested_200000_deep_exit_1_and_say_so(self):
        # A broker's answer goes through the same bounded conversion as a worker's reply.
        deep = nested_msgpack(200_000)
        for command, service in ((["services"], b"mmi.services"), (["stats"], b"mmi.stats"),
                                 (["stats", "--json"], b"mmi.stats")):
            with self.subTest(command=command):
                self.answers[service] = deep
                result = self.run_zclient(*command)
                self.assertEqual(result.returncode, USAGE, result.stderr[-2000:])
                self.assertIn(f"deeper than {MAX_NESTING} levels".encode(), result.stderr)
                self.assertIn(b"zclient call --raw " + service, result.stderr)
