"""Wire constants of 7/MDP v0.1, 8/MMI and the ZBC01 extension, as in shared/protocol.hpp.

The C++ header is the source of truth; a test compares these values with it.
"""

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

# ZBC01 statuses (three ASCII digits on the wire). NO_REPLY never crosses the wire: it is what
# a client reports when nothing came back before its own timeout.
NO_REPLY = 0
OK = 200
BAD_REQUEST = 400
TOO_LARGE = 413
QUEUE_FULL = 429
RETRIES_EXHAUSTED = 500
UNAVAILABLE = 503
DEADLINE_EXCEEDED = 504

HEADER_DEADLINE_MS = "deadline_ms"
MAX_REQUEST_ID_SIZE = 255

# Defaults shared by broker, worker and client.
HEARTBEAT_INTERVAL_MS = 2500
HEARTBEAT_LIVENESS = 3
DEFAULT_BROKER = "tcp://localhost:5555"
