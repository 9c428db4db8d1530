"""CURVE keys for clients and workers: the broker's public key and our own pair, Z85 strings."""
from dataclasses import dataclass

import zmq
import zmq.utils.z85

KEY_SIZE = 40  # Z85 of 32 bytes


@dataclass(frozen=True)
class CurveKeys:
    """What a peer needs to talk CURVE to a broker run with --curve-secret. The broker's
    authorized-keys file must list `public_key` with the role the peer acts in."""

    server_public: str
    public_key: str
    secret_key: str

    def __post_init__(self):
        for name in ("server_public", "public_key", "secret_key"):
            value = getattr(self, name)
            if not _is_z85_key(value):
                raise ValueError(f"CurveKeys.{name} must be a {KEY_SIZE}-character Z85 key, "
                                 f"got {len(value) if isinstance(value, str) else type(value).__name__}"
                                 f"{' characters' if isinstance(value, str) else ''}")

    def apply(self, socket):
        """Makes `socket` a CURVE client; call before connect()."""
        socket.curve_serverkey = self.server_public.encode()
        socket.curve_publickey = self.public_key.encode()
        socket.curve_secretkey = self.secret_key.encode()


def _is_z85_key(value):
    if not isinstance(value, str) or len(value) != KEY_SIZE:
        return False
    try:
        zmq.utils.z85.decode(value.encode())
    except (ValueError, KeyError, IndexError):
        return False
    return True


def generate_keypair():
    """A fresh (public, secret) pair of Z85 strings."""
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def read_keypair(path):
    """(public, secret) from a key pair file as `zbroker keygen` / `zclient keygen` write it:
    lines `public = KEY` and `secret = KEY`, `#` starting a comment."""
    keys = {}
    with open(path, encoding="ascii") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = (part.strip() for part in line.partition("="))
            if not sep or name not in ("public", "secret") or not _is_z85_key(value):
                raise ValueError(f"{path}: line {number}: expected `public = KEY` or "
                                 f"`secret = KEY` with a {KEY_SIZE}-character Z85 key")
            keys[name] = value
    missing = {"public", "secret"} - keys.keys()
    if missing:
        raise ValueError(f"{path}: no `{' = KEY`, `'.join(sorted(missing))} = KEY` line")
    if zmq.curve_public(keys["secret"].encode()).decode() != keys["public"]:
        raise ValueError(f"{path}: the public key does not belong to the secret key")
    return keys["public"], keys["secret"]
