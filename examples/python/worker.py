#!/usr/bin/python3
"""A Python worker for zbroker: "textstats" counts the lines, words and most common words of a text.

    PYTHONPATH=python examples/python/worker.py --broker tcp://localhost:5555 &
    build/release/bin/zclient call textstats '"the cat sat on the mat"'

It runs on Debian's /usr/bin/python3, with python3-zmq and python3-msgpack, whatever python3
comes first on PATH (a pyenv one sees none of Debian's packages). From the venv of
python/README.md: .venv/bin/python examples/python/worker.py
"""
import argparse
import collections
import logging
import re
import signal

from zbroker import Worker


def text_stats(text):
    if not isinstance(text, str):
        raise TypeError(f"textstats expects a string, got {type(text).__name__}")
    words = re.findall(r"[\w']+", text.lower())
    return {
        "lines": len(text.splitlines()),
        "words": len(words),
        "chars": len(text),
        "unique": len(set(words)),
        "top": collections.Counter(words).most_common(3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="tcp://localhost:5555")
    parser.add_argument("--service", default="textstats")
    parser.add_argument("--heartbeat-ms", type=int, default=2500, help="as the broker's")
    parser.add_argument("--liveness", type=int, default=3, help="as the broker's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    worker = Worker(args.broker, heartbeat_ms=args.heartbeat_ms, liveness=args.liveness)
    worker.handle(args.service, text_stats)
    # stop() finishes the request in hand and sends DISCONNECT before run() returns.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    logging.info("serving %r for %s", args.service, args.broker)
    worker.run()
    logging.info("stopped after %d request(s)", worker.stats()["served"])


if __name__ == "__main__":
    main()
