"""Wire constants of 7/MDP v0.1, 8/MMI and ZBC01 (shared/protocol.hpp), and ZB/1, zbroker's
native protocol (shared/wire.hpp): its encoder (Writer) and decoder (decode), the one place the
Python package reads and writes it.

The C++ headers are the source of truth; a test compares these values with them.

ZB/1 (docs/protocol.md, "Native protocol: ZB/1"). Frame 0 of a message is the envelope: the
signature b"ZB\\x01", then one or more records back to back; frames 1+ are body frames, claimed
in order by the records whose body is "in frames", and every one must be claimed. Integers are
little-endian; a `short` is a u8 length and that many bytes.

    REQUEST    0x11  client -> broker   flags [deadline_ms u32] [priority u8] [fairness_key:short]
                                        [idempotency_key:short] id:short service:short body
    ANSWER     0x12  broker -> client   id:short status:u16 body
    READY      0x21  worker -> broker   credit:u32 service:short
    JOB        0x22  broker -> worker   token:short flags [deadline_ms u32] [idempotency_key:short]
                                        body
    REPLY      0x23  worker -> broker   token:short body
    HEARTBEAT  0x24  worker <-> broker
    DISCONNECT 0x25  worker <-> broker
    CREDIT     0x26  worker <-> broker  credit:u32

    flags := which optional fields follow, in this order; any other bit makes it malformed
             0x01 HAS_DEADLINE         deadline_ms u32                   REQUEST and JOB
             0x02 HAS_PRIORITY         priority u8 (0 lowest .. 9)       REQUEST only
             0x04 HAS_FAIRNESS_KEY     fairness_key short, not empty     REQUEST only
             0x08 HAS_IDEMPOTENCY_KEY  idempotency_key short, not empty  REQUEST and JOB
    body  := 0x00 size:u32 bytes     inline
           | 0x01 count:u16          the next `count` body frames of the message
"""
import enum
import struct
from typing import NamedTuple, Optional, Sequence

MDP_CLIENT = b"MDPC01"  # 7/MDP client header
MDP_WORKER = b"MDPW01"  # 7/MDP worker header
ZBC_CLIENT = b"ZBC01"  # our client extension: request ids, headers, statuses

# 7/MDP worker commands: one byte after the MDPW01 header.
READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"

MMI_PREFIX = "mmi."
MMI_SERVICE = "mmi.service"
MMI_SERVICES = "mmi.services"
MMI_STATS = "mmi.stats"
MMI_FOUND = b"200"  # mmi.service: the service has workers
MMI_FORBIDDEN = b"403"  # with CURVE on, mmi.stats for a peer without the admin role

# Statuses (ZBC01: three ASCII digits; ZB/1: a u16). NO_REPLY never crosses the wire: it is
# what a client reports when nothing came back before its own timeout.
NO_REPLY = 0
OK = 200
BAD_REQUEST = 400
TOO_LARGE = 413
QUEUE_FULL = 429
RETRIES_EXHAUSTED = 500
UNAVAILABLE = 503
DEADLINE_EXCEEDED = 504

HEADER_DEADLINE_MS = "deadline_ms"
HEADER_PRIORITY = "priority"
HEADER_FAIRNESS_KEY = "fairness_key"
HEADER_IDEMPOTENCY_KEY = "idempotency_key"
# Request priorities run 0 (the default, lowest) to MAX_PRIORITY; higher goes first.
MAX_PRIORITY = 9
# A fairness key groups requests that share a service fairly (default: the connection); 1 to
# this many bytes.
MAX_FAIRNESS_KEY_SIZE = 255
# An idempotency key names a request across its resends (through another broker, after its own
# dropped): the broker passes it on in the JOB, and a worker that has just answered a request
# with that key sends the same reply again instead of running it twice. 1 to this many bytes.
MAX_IDEMPOTENCY_KEY_SIZE = 255
# The body of the 503 a draining broker (SIGTERM, mmi.drain) answers a new request with: a
# client that knows other brokers sends the request to one of them instead.
DRAINING_BODY = b"draining"
MAX_REQUEST_ID_SIZE = 255
MAX_SERVICE_NAME_SIZE = 255

# Defaults shared by broker, worker and client.
HEARTBEAT_INTERVAL_MS = 2500
HEARTBEAT_LIVENESS = 3
DEFAULT_BROKER = "tcp://localhost:5555"

# -- ZB/1 --------------------------------------------------------------------------------------

SIGNATURE = b"ZB\x01"
VERSION = 1


class Command(enum.IntEnum):
    """A ZB/1 record's first byte."""

    REQUEST = 0x11
    ANSWER = 0x12
    READY = 0x21
    JOB = 0x22
    REPLY = 0x23
    HEARTBEAT = 0x24
    DISCONNECT = 0x25
    CREDIT = 0x26


# Flags of REQUEST and JOB: which optional fields follow, in this order.
HAS_DEADLINE = 0x01  # u32 milliseconds
HAS_PRIORITY = 0x02  # u8, REQUEST only
HAS_FAIRNESS_KEY = 0x04  # short, never empty, REQUEST only
HAS_IDEMPOTENCY_KEY = 0x08  # short, never empty, REQUEST and JOB
REQUEST_FLAGS = HAS_DEADLINE | HAS_PRIORITY | HAS_FAIRNESS_KEY | HAS_IDEMPOTENCY_KEY
JOB_FLAGS = HAS_DEADLINE | HAS_IDEMPOTENCY_KEY
BODY_INLINE = 0x00
BODY_IN_FRAMES = 0x01
# A body of one frame up to this size travels inside the envelope; larger ones, and bodies of
# several frames, travel as frames of their own.
INLINE_BODY_LIMIT = 4096
# A sender starts a new message past this many envelope bytes, so a batch never nears the
# broker's frame size limit.
BATCH_BYTES = 64 * 1024
# A message of more records than this is malformed, refused whole (shared/wire.hpp kMaxRecords):
# a record costs its reader far more than its 1 to 20-odd bytes cost the sender.
MAX_RECORDS = 65536
MAX_SHORT = 255
MAX_BODY_FRAMES = 0xFFFF  # a body's frame count is a u16
MAX_U32 = 0xFFFFFFFF
# What an ANSWER may carry; any other status makes the message malformed (as in wire.cpp).
STATUSES = frozenset({OK, BAD_REQUEST, TOO_LARGE, QUEUE_FULL, RETRIES_EXHAUSTED, UNAVAILABLE,
                      DEADLINE_EXCEEDED})

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_INLINE = struct.Struct("<BI")  # form, size
_IN_FRAMES = struct.Struct("<BH")  # form, count


class Record(NamedTuple):
    """One decoded ZB/1 record; the fields its command does not have keep their defaults.

    `body` is a list of frames (bytes). An inline body is one frame, empty or not: ZB/1 writes
    "no body" as an empty inline one, so a receiver gets [b""] for it, as a 7/MDP peer that
    sent one empty frame was read before."""

    command: Command
    id: bytes = b""  # REQUEST, ANSWER
    service: bytes = b""  # REQUEST, READY
    token: bytes = b""  # JOB, REPLY
    deadline_ms: Optional[int] = None  # REQUEST, JOB
    priority: Optional[int] = None  # REQUEST (as sent: decode() does not check its range)
    fairness_key: bytes = b""  # REQUEST (b"": none given)
    idempotency_key: bytes = b""  # REQUEST, JOB (b"": none given)
    status: int = 0  # ANSWER
    credit: int = 0  # READY, CREDIT
    body: Sequence[bytes] = ()  # REQUEST, ANSWER, JOB, REPLY: then a list of its own


# Records without fields, shared: a message of many costs a list entry each.
_BARE_RECORDS = {command: Record(command) for command in (Command.HEARTBEAT,
                                                          Command.DISCONNECT)}


class MalformedMessage(ValueError):
    """A message that is not ZB/1 or does not parse. Nothing of it may be acted on."""


def is_envelope(frame):
    """Whether `frame` starts a ZB/1 message (7/MDP messages start with an empty frame)."""
    return bytes(frame[:len(SIGNATURE)]) == SIGNATURE


class _Cursor:
    """Reads an envelope; every read checks what is left and raises MalformedMessage."""

    __slots__ = ("data", "at")

    def __init__(self, data, at):
        self.data = data
        self.at = at

    def done(self):
        return self.at == len(self.data)

    def _need(self, size, what):
        if len(self.data) - self.at < size:
            raise MalformedMessage(f"record cut short in its {what} at byte {self.at}")

    def u8(self, what):
        self._need(1, what)
        value = self.data[self.at]
        self.at += 1
        return value

    def u16(self, what):
        self._need(2, what)
        (value,) = _U16.unpack_from(self.data, self.at)
        self.at += 2
        return value

    def u32(self, what):
        self._need(4, what)
        (value,) = _U32.unpack_from(self.data, self.at)
        self.at += 4
        return value

    def raw(self, size, what):
        self._need(size, what)
        value = self.data[self.at:self.at + size]
        self.at += size
        return value

    def short(self, what):
        return self.raw(self.u8(what), what)


def decode(frames):
    """The records of one ZB/1 message (a list of frames, bytes-like), in order.

    Raises MalformedMessage, and then nothing of the message may be acted on, when frame 0 is
    not an envelope, a record is cut short or has an unknown command, flag or body form, an
    ANSWER has an unknown status, a body claims frames that are not there, a frame after the
    envelope is claimed by no record, or it holds more than MAX_RECORDS records (found as the
    one too many is read, so what is built before is bounded too). An envelope holds at least
    one record."""
    if not frames or not is_envelope(frames[0]):
        raise MalformedMessage("no ZB/1 envelope")
    cursor = _Cursor(bytes(frames[0]), len(SIGNATURE))
    next_frame = 1
    records = []

    def body():
        nonlocal next_frame
        form = cursor.u8("body form")
        if form == BODY_INLINE:
            return [cursor.raw(cursor.u32("body size"), "inline body")]
        if form != BODY_IN_FRAMES:
            raise MalformedMessage(f"unknown body form {form:#04x}")
        count = cursor.u16("body frame count")
        if len(frames) - next_frame < count:
            raise MalformedMessage(f"a body claims {count} frame(s); "
                                   f"{len(frames) - next_frame} are left")
        first, next_frame = next_frame, next_frame + count
        return [bytes(frame) for frame in frames[first:next_frame]]

    def options(allowed):
        """Flags, then the optional fields they name: {field: value} of those present."""
        flags = cursor.u8("flags")
        if flags & ~allowed:
            raise MalformedMessage(f"unknown flags {flags:#04x}")
        fields = {}
        if flags & HAS_DEADLINE:
            fields["deadline_ms"] = cursor.u32("deadline_ms")
        if flags & HAS_PRIORITY:
            fields["priority"] = cursor.u8("priority")
        if flags & HAS_FAIRNESS_KEY:
            fields["fairness_key"] = cursor.short("fairness_key")
            if not fields["fairness_key"]:
                raise MalformedMessage("an empty fairness_key")
        if flags & HAS_IDEMPOTENCY_KEY:
            fields["idempotency_key"] = cursor.short("idempotency_key")
            if not fields["idempotency_key"]:
                raise MalformedMessage("an empty idempotency_key")
        return fields

    while True:
        byte = cursor.u8("command")
        try:
            command = Command(byte)
        except ValueError:
            raise MalformedMessage(f"unknown command {byte:#04x}") from None
        if command == Command.REQUEST:
            fields = options(REQUEST_FLAGS)
            request_id = cursor.short("id")
            service = cursor.short("service")
            record = Record(command, id=request_id, service=service, body=body(), **fields)
        elif command == Command.ANSWER:
            request_id = cursor.short("id")
            status = cursor.u16("status")
            if status not in STATUSES:
                raise MalformedMessage(f"unknown status {status}")
            record = Record(command, id=request_id, status=status, body=body())
        elif command == Command.READY:
            credit = cursor.u32("credit")
            record = Record(command, credit=credit, service=cursor.short("service"))
        elif command == Command.JOB:
            token = cursor.short("token")
            fields = options(JOB_FLAGS)
            record = Record(command, token=token, body=body(), **fields)
        elif command == Command.REPLY:
            token = cursor.short("token")
            record = Record(command, token=token, body=body())
        elif command == Command.CREDIT:
            record = Record(command, credit=cursor.u32("credit"))
        else:  # HEARTBEAT, DISCONNECT: no fields, so one shared record each
            record = _BARE_RECORDS[command]
        if len(records) == MAX_RECORDS:
            raise MalformedMessage(f"more than {MAX_RECORDS} records in one message")
        records.append(record)
        if cursor.done():
            break
    if next_frame != len(frames):
        raise MalformedMessage(f"{len(frames) - next_frame} frame(s) after the envelope that no "
                               f"record claims")
    return records


def body_frames(body):
    """A body as a list of frames: bytes-like is one frame, else an iterable of bytes-like."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [bytes(body)]
    return [bytes(part) for part in body]


class Writer:
    """Builds one ZB/1 message: records go into the envelope, large bodies into frames after it.

    A record is checked before anything of it is written, so a ValueError (an id, token or
    service over 255 bytes, a credit or deadline outside u32, a priority outside 0..9, a
    fairness or idempotency key empty or over 255 bytes, a body of more than 65535 frames)
    leaves the message as it was."""

    def __init__(self):
        self._envelope = bytearray(SIGNATURE)
        self._frames = []
        self.records = 0

    def __len__(self):
        """Envelope bytes so far: past BATCH_BYTES a sender should take() and send."""
        return len(self._envelope)

    @property
    def empty(self):
        return self.records == 0

    def request(self, request_id, service, body, deadline_ms=None, *, priority=None,
                fairness_key=None, idempotency_key=None):
        """A REQUEST. None leaves an option out: no deadline, priority 0, the connection as
        the fairness key, no idempotency key. `priority` is an int from 0 to MAX_PRIORITY
        (higher goes first); `fairness_key` and `idempotency_key` str (UTF-8) or bytes, 1 to
        255 bytes."""
        self._add(bytes([Command.REQUEST]) +
                  _options(deadline_ms, priority, fairness_key, idempotency_key) +
                  _short(request_id, "id") + _short(service, "service"), body)

    def answer(self, request_id, status, body=b""):
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one ZB/1 carries")
        self._add(bytes([Command.ANSWER]) + _short(request_id, "id") + _U16.pack(status), body)

    def ready(self, service, credit):
        self._add(bytes([Command.READY]) + _u32(credit, "credit") + _short(service, "service"))

    def job(self, token, body, deadline_ms=None, *, idempotency_key=None):
        self._add(bytes([Command.JOB]) + _short(token, "token") +
                  _options(deadline_ms, idempotency_key=idempotency_key), body)

    def reply(self, token, body):
        self._add(bytes([Command.REPLY]) + _short(token, "token"), body)

    def heartbeat(self):
        self._add(bytes([Command.HEARTBEAT]))

    def disconnect(self):
        self._add(bytes([Command.DISCONNECT]))

    def credit(self, credit):
        self._add(bytes([Command.CREDIT]) + _u32(credit, "credit"))

    def take(self):
        """The message (envelope, then body frames) as a list of frames; starts afresh."""
        message = [bytes(self._envelope), *self._frames]
        self.clear()
        return message

    def clear(self):
        del self._envelope[len(SIGNATURE):]
        self._frames = []
        self.records = 0

    def _add(self, fields, body=None):
        frames = []
        if body is not None:
            frames = body_frames(body)
            if len(frames) > MAX_BODY_FRAMES:
                raise ValueError(f"a body of {len(frames)} frames: ZB/1 carries at most "
                                 f"{MAX_BODY_FRAMES}")
            if not frames or (len(frames) == 1 and len(frames[0]) <= INLINE_BODY_LIMIT):
                data = frames[0] if frames else b""
                fields += _INLINE.pack(BODY_INLINE, len(data)) + data
                frames = []
            else:
                fields += _IN_FRAMES.pack(BODY_IN_FRAMES, len(frames))
        self._envelope += fields
        self._frames += frames
        self.records += 1


def _short(value, what):
    value = value.encode() if isinstance(value, str) else bytes(value)
    if len(value) > MAX_SHORT:
        raise ValueError(f"{what} of {len(value)} bytes: ZB/1 carries at most {MAX_SHORT}")
    return bytes([len(value)]) + value


def _u32(value, what):
    if not isinstance(value, int) or not 0 <= value <= MAX_U32:
        raise ValueError(f"{what} {value!r} is not an integer from 0 to {MAX_U32}")
    return _U32.pack(value)


def check_priority(priority):
    """`priority` if it is an int from 0 to MAX_PRIORITY (or None), else ValueError."""
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool) or
                                 not 0 <= priority <= MAX_PRIORITY):
        raise ValueError(f"priority {priority!r} is not an integer from 0 to {MAX_PRIORITY}")
    return priority


def check_fairness_key(fairness_key):
    """`fairness_key` as bytes (a str is UTF-8 encoded), or None; ValueError unless it is a str
    or bytes of 1 to MAX_FAIRNESS_KEY_SIZE bytes."""
    return _check_key(fairness_key, "fairness_key", MAX_FAIRNESS_KEY_SIZE, "the connection's")


def check_idempotency_key(idempotency_key):
    """`idempotency_key` as bytes (a str is UTF-8 encoded), or None; ValueError unless it is a
    str or bytes of 1 to MAX_IDEMPOTENCY_KEY_SIZE bytes."""
    return _check_key(idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY_SIZE, "none")


def _check_key(value, what, most, none_means):
    if value is None:
        return None
    if isinstance(value, str):
        key = value.encode()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        key = bytes(value)
    else:
        raise ValueError(f"{what} must be a str or bytes, not {type(value).__name__}")
    if not 1 <= len(key) <= most:
        raise ValueError(f"{what} of {len(key)} bytes: it must have 1 to {most} (None for "
                         f"{none_means})")
    return key


def is_draining(status, body):
    """Whether an answer is a draining broker's refusal: 503 with the body DRAINING_BODY. Not any
    503: one at a request's deadline means no worker took it, and another broker would not
    do better."""
    return status == UNAVAILABLE and [bytes(frame) for frame in body] == [DRAINING_BODY]


def _options(deadline_ms=None, priority=None, fairness_key=None, idempotency_key=None):
    """Flags, then the optional fields they name (wire.cpp's put_options)."""
    flags = 0
    fields = b""
    if deadline_ms is not None:
        flags |= HAS_DEADLINE
        fields += _u32(deadline_ms, "deadline_ms")
    if check_priority(priority) is not None:
        flags |= HAS_PRIORITY
        fields += bytes([priority])
    key = check_fairness_key(fairness_key)
    if key is not None:
        flags |= HAS_FAIRNESS_KEY
        fields += bytes([len(key)]) + key
    key = check_idempotency_key(idempotency_key)
    if key is not None:
        flags |= HAS_IDEMPOTENCY_KEY
        fields += bytes([len(key)]) + key
    return bytes([flags]) + fields
