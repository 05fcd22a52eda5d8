"""Key files of the simulated lab's control channel (CurveZMQ, as pyzmq's `zmq.auth` writes
them). The lab is the other side of the wire and keeps its own keys: `server` for itself,
`client` for the tests and the harness that drive it, on an `allowed/` list."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import zmq
import zmq.auth


def make_control_keys(key_dir: Path) -> None:
    """The server's and the client's key pairs, the client allowed (kept across restarts)."""
    key_dir.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        if not (key_dir / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(str(key_dir), name)
            os.chmod(key_dir / f"{name}.key_secret", 0o600)
    (key_dir / "allowed").mkdir(exist_ok=True)
    shutil.copy(key_dir / "client.key", key_dir / "allowed" / "client.key")


def curve_socket(ctx: zmq.Context, kind: int, secret: Path, server_key: Path | None) -> zmq.Socket:
    """A CurveZMQ socket: a server without `server_key`, else a client of that server."""
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(str(secret))
    if server_key is None:
        sock.curve_server = True
    else:
        sock.curve_serverkey = zmq.auth.load_certificate(str(server_key))[0]
    sock.linger = 0
    return sock
