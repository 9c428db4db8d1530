"""Starts zbroker/zworker processes for tests, and always cleans them up."""
import os
import re
import subprocess
import threading
import time

BIN_DIR = os.environ.get("ZBROKER_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build/debug/bin"))

# How long a test waits for an event that normally comes within milliseconds (a log line, a
# reply, a worker registering). Generous on purpose: a passing test never waits it out, and a
# sanitizer build on a 2-core machine whose cores are both busy runs 20x slower than a release
# build on an idle one. One constant for every Python suite, as kPatience is for the C++ tests.
PATIENCE = 30.0
# A broker has more to do before it listens (a sanitizer runtime to load, CURVE keys to read).
START_PATIENCE = 60.0


def too_slow(what, seconds):
    """The message of a test that gave up waiting: the product may be wrong, or the machine slow."""
    return (f"{what} did not happen within {seconds:g} s: the product is wrong, or the machine is "
            f"too slow (loaded, or a sanitizer build)")


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} not built (set ZBROKER_BIN_DIR)")
    return path


class Process:
    """A child whose stderr is collected in a thread, so a line can be awaited."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()  # end of output: waiters stop waiting for more

    def wait_for_line(self, pattern, timeout=PATIENCE):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                if not self._reader.is_alive():  # all it wrote is read: no more lines will come
                    raise TimeoutError(f"no line matching {pattern!r}, and the process closed its "
                                       f"output (exit status {self.proc.poll()}); got:\n" +
                                       "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(too_slow(f"a line matching {pattern!r}", timeout) +
                                       "; got:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.1))

    def stop(self, timeout=PATIENCE):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(1)
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        return self.proc.returncode


def start_broker(*extra):
    """A broker on an ephemeral loopback port; returns (process, endpoint)."""
    broker = Process([binary("zbroker"), "--bind", "tcp://127.0.0.1:*", *extra])
    endpoint = broker.wait_for_line(r"listening on (tcp://\S+)", START_PATIENCE).group(1)
    return broker, endpoint
