"""CurveZMQ key files and authenticated sockets, shared by every ZeroMQ endpoint of qnode.

Layout of a key directory: `<name>.key` (public) and `<name>.key_secret` (secret) in the file
format of pyzmq's `zmq.auth` (`zmq.auth.load_certificate` reads them). A secret is private
from its first byte: created with mode 0600 (never made private after it was written), and
refused, with the fix, when group or others may read it.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from typing import TypeVar

import zmq
import zmq.auth

from controller.messaging.wire import MAX_MESSAGE_BYTES
from qnode.errors import QnodeError

SocketT = TypeVar("SocketT", bound=zmq.Socket)

CURVE_MESSAGE_OVERHEAD = 33
"""A message of n bytes travels as a CurveZMQ MESSAGE command of n + 33 bytes (its name 8,
nonce 8, MAC 16, flags 1), and ZMQ_MAXMSGSIZE bounds what travels."""
MAXMSGSIZE = MAX_MESSAGE_BYTES + CURVE_MESSAGE_OVERHEAD
"""ZMQ_MAXMSGSIZE of every socket here: a message of up to wire.MAX_MESSAGE_BYTES arrives, a
larger one closes its sender's connection before it is allocated."""

_BANNER = (
    "#   ****  Generated on {now} by qnode  ****\n"
    "#   ZeroMQ CURVE {what} Certificate\n"
    "#   {warning}\n\n"
)


class KeyFileError(QnodeError):
    """A key file that must not be used as it is (a secret others may read)."""


def _key_text(public: str, secret: str | None) -> str:
    what, warning = (
        ("**Secret**", "Exchange securely, or use a secure mechanism to distribute")
        if secret
        else ("Public", "Exchange securely, or use a secure mechanism to distribute")
    )
    now = datetime.datetime.now().isoformat(timespec="seconds")
    text = _BANNER.format(now=now, what=what, warning=warning)
    text += f'metadata\ncurve\n    public-key = "{public}"\n'
    if secret:
        text += f'    secret-key = "{secret}"\n'
    return text


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write `path` through a temporary file created with `mode` (O_EXCL: nothing else can
    have opened it), then rename it into place: never a moment with looser permissions,
    never a half-written key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """A new key pair `<name>.key` (0644) and `<name>.key_secret` (0600 from its first byte),
    replacing any there. Callers decide whether replacing is allowed."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_key, secret_key = (k.decode("ascii") for k in zmq.curve_keypair())
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    _write_new(secret, _key_text(public_key, secret_key), 0o600)
    _write_new(public, _key_text(public_key, None), 0o644)
    return public, secret


def ensure_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.key`/`<name>.key_secret` in `directory` unless they exist."""
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not (public.exists() and secret.exists()):
        public, secret = write_keypair(directory, name)
    return public, secret


def copy_public(source: Path, target: Path) -> None:
    """A public key file onto an allow-list (written whole, then renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_new(target, source.read_text(encoding="utf-8"), 0o644)


def check_secret(secret_file: Path) -> None:
    """Refuse a secret key file that group or others may read (or write)."""
    try:
        mode = stat.S_IMODE(os.stat(secret_file).st_mode)
    except FileNotFoundError:
        raise KeyFileError(f"secret key {secret_file} does not exist") from None
    if mode & 0o077:
        raise KeyFileError(
            f"secret key {secret_file} is open to group or others (mode {mode:04o}); a secret "
            f"key must be private to its owner: `chmod 600 {secret_file}`, and replace the key "
            "if someone else may have read it"
        )


def load_secret(secret_file: Path) -> tuple[bytes, bytes]:
    """(public, secret) of a secret key file that is private to its owner."""
    check_secret(Path(secret_file))
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise KeyFileError(f"{secret_file} holds no secret key")
    return public, secret


def server_socket(ctx: zmq.Context[SocketT], kind: int, secret_file: Path) -> SocketT:
    """A CurveZMQ server socket; like every qnode socket, it receives no message larger than
    wire.MAX_MESSAGE_BYTES."""
    public, secret = load_secret(secret_file)
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_server = True
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, MAXMSGSIZE)  # a larger message: connection closed
    return sock


def client_socket(
    ctx: zmq.Context[SocketT], kind: int, secret_file: Path, server_public_file: Path
) -> SocketT:
    public, secret = load_secret(secret_file)
    server_public, _ = zmq.auth.load_certificate(str(server_public_file))
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_serverkey = server_public
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, MAXMSGSIZE)
    return sock


__all__ = [
    "KeyFileError",
    "check_secret",
    "client_socket",
    "copy_public",
    "ensure_keypair",
    "load_secret",
    "server_socket",
    "write_keypair",
]
