#!/usr/bin/python3
"""A Python client for zbroker calling zworker's built-in services (hello, stats, echo).

    build/release/bin/zworker --service hello --service stats --service echo &
    PYTHONPATH=python examples/python/client.py --broker tcp://localhost:5555

It runs on Debian's /usr/bin/python3, with python3-zmq and python3-msgpack, whatever python3
comes first on PATH (a pyenv one sees none of Debian's packages). From the venv of
python/README.md: .venv/bin/python examples/python/client.py
"""
import argparse
import random
import sys

from zbroker import Client, ZbrokerError


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="tcp://localhost:5555")
    parser.add_argument("--timeout", type=float, default=2.5, help="seconds per attempt")
    args = parser.parse_args()

    with Client(args.broker, timeout=args.timeout, retries=2) as client:
        try:
            print("hello:", client.call("hello", "Hello, Server!"))
            summary = client.call("stats", [2, 4, 4, 4, 5, 5, 7, 9])
            print("stats: mean {mean:g} stddev {stddev:g} min {min:g} max {max:g}".format(**summary))
            print("echo:", client.call("echo", {"id": 7, "tags": ["a", "b"], "blob": b"\x00\x01"}))

            # 100 samples in flight at most 20 at a time; answers come back in input order.
            samples = [[random.gauss(10, 2) for _ in range(50)] for _ in range(100)]
            means = []
            for status, reply in client.pipeline("stats", samples, window=20):
                if status != 200:
                    raise ZbrokerError(f"a stats request got status {status}", status=status)
                means.append(reply["mean"])
            print(f"pipelined: {len(means)} means, overall {sum(means) / len(means):.2f}")
        except ZbrokerError as e:
            print(f"client.py: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
