"""Minimal Majordomo (7/MDP v0.1) peers written from the spec with raw pyzmq frames.

They know nothing of zbroker: if zbroker serves them, it speaks MDP as others do.
MdpClient works over REQ (the socket adds the empty delimiter) or DEALER (we add it).
"""
import time

import zmq

from processes import PATIENCE

# A reply that should come is awaited this long; a test that expects none passes its own window.
PATIENCE_MS = int(PATIENCE * 1000)

MDPC = b"MDPC01"
MDPW = b"MDPW01"
ZBC = b"ZBC01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = (bytes([c]) for c in range(1, 6))


class MdpClient:
    def __init__(self, ctx, endpoint, socket_type=zmq.REQ):
        self.socket_type = socket_type
        self.socket = ctx.socket(socket_type)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send(self, service, *body):
        frames = [MDPC, service, *body]
        if self.socket_type == zmq.DEALER:
            frames.insert(0, b"")
        self.socket.send_multipart(frames)

    def recv(self, timeout_ms=PATIENCE_MS):
        """Returns (service, body frames), or None on timeout."""
        if not self.socket.poll(timeout_ms):
            return None
        frames = self.socket.recv_multipart()
        if self.socket_type == zmq.DEALER:
            assert frames.pop(0) == b"", "DEALER reply must start with an empty delimiter"
        assert frames[0] == MDPC, f"reply header {frames[0]!r}"
        return frames[1], frames[2:]

    def request(self, service, *body, timeout_ms=PATIENCE_MS):
        self.send(service, *body)
        return self.recv(timeout_ms)

    def close(self):
        self.socket.close()


class ZbcClient:
    """The ZBC01 extension: request ids, headers (msgpack map), status codes."""

    def __init__(self, ctx, endpoint):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send(self, service, request_id, *body, headers=b"\x80"):
        self.socket.send_multipart([b"", ZBC, service, request_id, headers, *body])

    def recv(self, timeout_ms=PATIENCE_MS):
        """Returns (service, request_id, status, body frames), or None on timeout."""
        if not self.socket.poll(timeout_ms):
            return None
        empty, header, service, request_id, status, *body = self.socket.recv_multipart()
        assert empty == b"" and header == ZBC
        return service, request_id, status, body

    def close(self):
        self.socket.close()


class MdpWorker:
    """A worker with its own heartbeating, driven by serve_for() in the caller's thread."""

    def __init__(self, ctx, endpoint, service, handler, heartbeat_ms=2500, credit=None):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)
        self.handler = handler
        self.heartbeat_s = heartbeat_ms / 1000
        self.served = 0
        self.heartbeats_seen = 0
        self.disconnected = False
        if isinstance(service, str):
            service = service.encode()
        ready = [b"", MDPW, READY, service]
        if credit is not None:
            ready.append(str(credit).encode())
        self.socket.send_multipart(ready)
        self.next_heartbeat = time.monotonic() + self.heartbeat_s

    def serve_for(self, seconds, until=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            if self.socket.poll(50):
                frames = self.socket.recv_multipart()
                assert frames[0] == b"" and frames[1] == MDPW, f"bad frames {frames!r}"
                command = frames[2]
                if command == REQUEST:
                    token, empty, body = frames[3], frames[4], frames[5:]
                    assert empty == b""
                    self.socket.send_multipart([b"", MDPW, REPLY, token, b"", *self.handler(body)])
                    self.served += 1
                elif command == HEARTBEAT:
                    self.heartbeats_seen += 1
                elif command == DISCONNECT:
                    self.disconnected = True
                    return
            if time.monotonic() >= self.next_heartbeat:
                self.socket.send_multipart([b"", MDPW, HEARTBEAT])
                self.next_heartbeat = time.monotonic() + self.heartbeat_s

    def disconnect(self):
        self.socket.send_multipart([b"", MDPW, DISCONNECT])

    def close(self):
        self.socket.close()
