"""What every qnode daemon (node or midpoint) shares: one owner per station, an info file
that tells clients where it listens, and a CurveZMQ ROUTER that only allow-listed keys reach.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from controller.messaging.curve import server_socket
from controller.messaging.keys import AllowList, allow_station, node_keys
from qnode.errors import QnodeError


def node_info_path(data_dir: Path, node: str) -> Path:
    return data_dir / "nodes" / f"{node}.json"


def running_daemon_pid(data_dir: Path, node: str) -> int | None:
    """The pid of a live daemon serving `node` in this data folder, if any."""
    try:
        pid = int(json.loads(node_info_path(data_dir, node).read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def claim(data_dir: Path, node: str) -> None:
    other = running_daemon_pid(data_dir, node)
    if other is not None:
        raise QnodeError(f"node {node} is already served by process {other}: one owner per node")


def write_info(data_dir: Path, node: str, endpoint: str, **extra) -> None:
    path = node_info_path(data_dir, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    public, _ = node_keys(data_dir, node)
    tmp = path.with_suffix(".tmp")
    info = {
        "node": node,
        "endpoint": endpoint,
        "pid": os.getpid(),
        "server_public_key": str(public.resolve()),
        **extra,
    }
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def remove_info(data_dir: Path, node: str) -> None:
    """Remove the info file, unless another daemon has written its own meanwhile."""
    path = node_info_path(data_dir, node)
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_info(data_dir: Path, node: str) -> dict:
    path = node_info_path(data_dir, node)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise QnodeError(f"{node} is not served: no {path} (start its daemon)") from None
    except (ValueError, OSError) as e:
        raise QnodeError(f"{path}: unreadable ({e})") from None


class SecureRouter:
    """The station's ROUTER: CurveZMQ server, allow-listed clients, ROUTER_MANDATORY (a
    message to a peer that is not connected raises rather than vanishing), linger 0."""

    def __init__(self, ctx: zmq.asyncio.Context, data_dir: Path, node: str, who: str) -> None:
        self.ctx = ctx
        self.data_dir = data_dir
        self.node = node
        self.allow_list = AllowList(data_dir, who)
        self.auth: AsyncioAuthenticator | None = None
        self.sock: zmq.asyncio.Socket | None = None
        self.endpoint = ""

    def bind(self, endpoint: str) -> zmq.asyncio.Socket:
        _, secret = node_keys(self.data_dir, self.node)
        allow_station(self.data_dir, self.node)  # the other stations of the lab may call it
        self.auth = AsyncioAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve_callback("*", credentials_provider=self.allow_list)
        sock = server_socket(self.ctx, zmq.ROUTER, secret)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if endpoint.endswith(":0"):
            port = sock.bind_to_random_port(endpoint.rsplit(":", 1)[0])
            self.endpoint = f"{endpoint.rsplit(':', 1)[0]}:{port}"
        else:
            sock.bind(endpoint)
            self.endpoint = endpoint
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
