"""Starts zbroker/zworker processes for tests, and always cleans them up."""
import os
import re
import subprocess
import threading
import time

BIN_DIR = os.environ.get("ZBROKER_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build/debug/bin"))


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

    def wait_for_line(self, pattern, timeout=10.0):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.1))

    def stop(self, timeout=10.0):
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
    endpoint = broker.wait_for_line(r"listening on (tcp://\S+)").group(1)
    return broker, endpoint
