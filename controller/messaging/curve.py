"""CurveZMQ key files and authenticated sockets, shared by every ZeroMQ endpoint of qnode.

Layout of a key directory: `<name>.key` (public) and `<name>.key_secret` (secret, mode 0600)
as pyzmq's `zmq.auth.create_certificates` writes them, and `allowed/` holding the public keys
of the clients a server accepts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TypeVar

import zmq
import zmq.auth

SocketT = TypeVar("SocketT", bound=zmq.Socket)


def ensure_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.key`/`<name>.key_secret` in `directory` unless they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not (public.exists() and secret.exists()):
        public, secret = (Path(p) for p in zmq.auth.create_certificates(str(directory), name))
        os.chmod(secret, 0o600)
    return public, secret


def allow(directory: Path, public_key_file: Path) -> None:
    """Put a client's public key on a server's allow-list."""
    allowed = directory / "allowed"
    allowed.mkdir(parents=True, exist_ok=True)
    shutil.copy(public_key_file, allowed / public_key_file.name)


def server_socket(ctx: zmq.Context[SocketT], kind: int, secret_file: Path) -> SocketT:
    sock = ctx.socket(kind)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_server = True
    sock.linger = 0
    return sock


def client_socket(
    ctx: zmq.Context[SocketT], kind: int, secret_file: Path, server_public_file: Path
) -> SocketT:
    sock = ctx.socket(kind)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    server_public, _ = zmq.auth.load_certificate(str(server_public_file))
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_serverkey = server_public
    sock.linger = 0
    return sock
