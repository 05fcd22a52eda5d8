"""CurveZMQ keys of a lab: the nodes' server keys, the clients' keys, and the allow-list.

Layout under `<data_dir>/keys/`: `node-<N>.key(_secret)` per daemon, `clients/<name>.key(_secret)`
per client, and `allowed/<name>.key`: the public keys the daemons accept. The first daemon of
a lab creates an `operator` client key and allows it, so security is on from the first run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import zmq.auth
from zmq.utils import z85

from controller.messaging.curve import ensure_keypair

log = logging.getLogger("qnode.security")

DEFAULT_CLIENT = "operator"


def key_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def node_keys(data_dir: Path, node: str) -> tuple[Path, Path]:
    return ensure_keypair(key_dir(data_dir), f"node-{node}")


def client_keys(data_dir: Path, name: str = DEFAULT_CLIENT) -> tuple[Path, Path]:
    public = key_dir(data_dir) / "clients" / f"{name}.key"
    secret = public.with_suffix(".key_secret")
    if not secret.exists():
        raise FileNotFoundError(
            f"no client key '{name}' in {public.parent}: `qnode keys generate {name}` makes one"
        )
    return public, secret


def generate_client(data_dir: Path, name: str, allow: bool = True) -> Path:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"key name {name!r}: letters, digits, '-' and '_' only")
    public, _ = ensure_keypair(key_dir(data_dir) / "clients", name)
    if allow:
        allowed = key_dir(data_dir) / "allowed"
        allowed.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, allowed / public.name)
    return public


def ensure_default_client(data_dir: Path) -> None:
    if not (key_dir(data_dir) / "clients" / f"{DEFAULT_CLIENT}.key_secret").exists():
        generate_client(data_dir, DEFAULT_CLIENT)
        log.info("created the '%s' client key and allowed it", DEFAULT_CLIENT)


def allow_station(data_dir: Path, node: str) -> None:
    """A station's own key on the lab's allow-list: the nodes and the midpoint call each
    other (link layer, heralds). In a lab on several machines, copy the key files across."""
    public, _ = node_keys(data_dir, node)
    allowed = key_dir(data_dir) / "allowed"
    allowed.mkdir(parents=True, exist_ok=True)
    target = allowed / public.name
    if not target.exists():
        shutil.copy(public, target)


def allowed_keys(data_dir: Path) -> dict[str, str]:
    """z85 public key -> name, for every key on the allow-list."""
    out = {}
    for path in sorted((key_dir(data_dir) / "allowed").glob("*.key")):
        public, _ = zmq.auth.load_certificate(str(path))
        out[public.decode() if isinstance(public, bytes) else public] = path.stem
    return out


class KeyNames:
    """z85 key -> allow-list name, cached; re-read when an unknown key turns up."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._names: dict[str, str] = {}

    def name(self, key: str | None) -> str | None:
        if not key:
            return None
        if key not in self._names:
            self._names = allowed_keys(self.data_dir)
        return self._names.get(key)


class AllowList:
    """ZAP credentials provider: allow listed keys, log every refusal."""

    def __init__(self, data_dir: Path, who: str) -> None:
        self.data_dir = data_dir
        self.who = who
        self.refused = 0

    def callback(self, domain: str, key: bytes | str) -> bool:
        key_text = key.decode() if isinstance(key, bytes) else key
        name = allowed_keys(self.data_dir).get(key_text)
        if name is None:
            self.refused += 1
            log.warning("%s: refused a client with unknown CurveZMQ key %s", self.who, key_text)
            return False
        return True


def fingerprint(public_key_file: Path) -> str:
    public, _ = zmq.auth.load_certificate(str(public_key_file))
    raw = z85.decode(public)
    return raw[:8].hex()
