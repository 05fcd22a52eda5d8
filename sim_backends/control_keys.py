"""Key files of the simulated lab's control channel (CurveZMQ, in the file format of pyzmq's
`zmq.auth`). The lab is the other side of the wire and keeps its own keys: `server` for
itself, `client` for the tests and the harness that drive it, on an `allowed/` list.

A secret is written private from its first byte (created 0600 under a temporary name, then
renamed into place), and a secret that group or others may read is refused, with the fix.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import zmq
import zmq.auth


class LooseSecretKey(PermissionError):
    pass


def _key_text(public: str, secret: str | None) -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    what = "**Secret**" if secret else "Public"
    text = f"#   ****  Generated on {now} by the simulated lab  ****\n"
    text += f"#   ZeroMQ CURVE {what} Certificate\n\nmetadata\ncurve\n"
    text += f'    public-key = "{public}"\n'
    if secret:
        text += f'    secret-key = "{secret}"\n'
    return text


def _write_new(path: Path, text: str, mode: int) -> None:
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


def write_keypair(key_dir: Path, name: str) -> None:
    public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
    _write_new(key_dir / f"{name}.key_secret", _key_text(public, secret), 0o600)
    _write_new(key_dir / f"{name}.key", _key_text(public, None), 0o644)


def make_control_keys(key_dir: Path) -> None:
    """The server's and the client's key pairs, the client allowed (kept across restarts)."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("server", "client"):
        if not (key_dir / f"{name}.key_secret").exists():
            write_keypair(key_dir, name)
    (key_dir / "allowed").mkdir(exist_ok=True)
    _write_new(key_dir / "allowed" / "client.key", (key_dir / "client.key").read_text(), 0o644)


def load_secret(secret: Path) -> tuple[bytes, bytes]:
    mode = stat.S_IMODE(os.stat(secret).st_mode)
    if mode & 0o077:
        raise LooseSecretKey(
            f"secret key {secret} is open to group or others (mode {mode:04o}); a secret key "
            f"must be private to its owner: `chmod 600 {secret}`"
        )
    public, secret_key = zmq.auth.load_certificate(str(secret))
    if secret_key is None:
        raise LooseSecretKey(f"{secret} holds no secret key")
    return public, secret_key


def curve_socket(ctx: zmq.Context, kind: int, secret: Path, server_key: Path | None) -> zmq.Socket:
    """A CurveZMQ socket: a server without `server_key`, else a client of that server."""
    keys = load_secret(secret)
    sock = ctx.socket(kind)
    sock.curve_publickey, sock.curve_secretkey = keys
    if server_key is None:
        sock.curve_server = True
    else:
        sock.curve_serverkey = zmq.auth.load_certificate(str(server_key))[0]
    sock.linger = 0
    return sock
