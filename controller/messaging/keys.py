"""CurveZMQ keys of a lab: the stations' keys, the clients' keys, and the allow-list.

Layout under `<data_dir>/keys/`:

- `node-<N>.key(_secret)`: the key pair of station N (a node or the midpoint), made by its
  daemon on its first start;
- `clients/<name>.key(_secret)`: a client's key pair (`qnode keys generate NAME`);
- `allowed/<name>.key`: the clients the daemons accept (role "client": operator requests);
- `allowed/stations/node-<N>.key`: the stations they accept (role "station": peer and
  midpoint messages). Each daemon puts its own key there; in a lab on several machines, copy
  the other stations' public keys into that folder.

Station names (`node-<N>`, and the lab's station names) are reserved: no client key takes
one, and no key or allow-list entry is replaced without `force`. A data folder of the older
layout (station keys among the clients in `allowed/`) is migrated by the first daemon that
starts. The first daemon of a lab also creates an `operator` client key and allows it, so
security is on from the first run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import zmq.auth
from zmq.utils import z85

from controller.messaging.curve import copy_public, ensure_keypair, write_keypair

log = logging.getLogger("qnode.security")

DEFAULT_CLIENT = "operator"
STATION_PREFIX = "node-"
CLIENT = "client"
STATION = "station"
REFUSAL_LOG_INTERVAL_S = 10.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class KeyRefused(ValueError):
    """A key that may not be made (a reserved name, or one that exists without force)."""


@dataclass(frozen=True)
class KeyEntry:
    """Who an allowed key is: its allow-list name and its role (CLIENT or STATION)."""

    name: str
    role: str


def key_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def allowed_dir(data_dir: Path) -> Path:
    return key_dir(data_dir) / "allowed"


def stations_dir(data_dir: Path) -> Path:
    return allowed_dir(data_dir) / "stations"


def station_key_name(node: str) -> str:
    return f"{STATION_PREFIX}{node}"


def node_keys(data_dir: Path, node: str) -> tuple[Path, Path]:
    return ensure_keypair(key_dir(data_dir), station_key_name(node))


def client_keys(data_dir: Path, name: str = DEFAULT_CLIENT) -> tuple[Path, Path]:
    public = key_dir(data_dir) / "clients" / f"{name}.key"
    secret = public.with_suffix(".key_secret")
    if not secret.exists():
        raise FileNotFoundError(
            f"no client key '{name}' in {public.parent}: `qnode keys generate {name}` makes one"
        )
    return public, secret


def reserved(name: str, stations: tuple[str, ...] = ()) -> bool:
    """A station's name: `node-<anything>`, or one of the lab's station names."""
    return name.lower().startswith(STATION_PREFIX) or name in stations


def client_files(data_dir: Path, name: str) -> list[Path]:
    """The files a new client key `name` would replace."""
    files = (
        key_dir(data_dir) / "clients" / f"{name}.key",
        key_dir(data_dir) / "clients" / f"{name}.key_secret",
        allowed_dir(data_dir) / f"{name}.key",
    )
    return [f for f in files if f.exists()]


def generate_client(
    data_dir: Path,
    name: str,
    allow: bool = True,
    force: bool = False,
    stations: tuple[str, ...] = (),
) -> Path:
    """A new client key pair, on the allow-list as a client. Refused (KeyRefused) for a
    station's name, and for a name that has a key or allow-list entry unless `force`."""
    if not _NAME.fullmatch(name):
        raise KeyRefused(f"key name {name!r}: letters, digits, '-' and '_' only")
    if reserved(name, stations):
        raise KeyRefused(
            f"'{name}' is reserved for a station (node-<N> and the lab's station names are): "
            "a station's key is made by its daemon and allowed as a station, never as a "
            "client; choose another name"
        )
    existing = client_files(data_dir, name)
    if existing and not force:
        raise KeyRefused(
            f"client key '{name}' exists ({', '.join(map(str, existing))}): `--force` "
            "replaces it, and the old key is refused from then on"
        )
    public, _ = write_keypair(key_dir(data_dir) / "clients", name)
    if allow:
        copy_public(public, allowed_dir(data_dir) / public.name)
    if existing:
        log.warning("client key '%s' replaced (%s)", name, ", ".join(map(str, existing)))
    return public


def ensure_default_client(data_dir: Path) -> None:
    if not (key_dir(data_dir) / "clients" / f"{DEFAULT_CLIENT}.key_secret").exists():
        generate_client(data_dir, DEFAULT_CLIENT, force=True)
        log.info("created the '%s' client key and allowed it", DEFAULT_CLIENT)


def public_key(path: Path) -> str:
    public, _ = zmq.auth.load_certificate(str(path))
    return public.decode() if isinstance(public, bytes) else public


def migrate_allow_list(data_dir: Path) -> None:
    """The older layout kept the stations' keys among the clients (`allowed/node-<N>.key`):
    move each one that is a station's key (this machine's `keys/node-<N>.key`, or a key copied
    from another machine's station) to `allowed/stations/`. An entry under a station's name
    that is not that station's key (what `qnode keys generate node-<N>` used to leave) stays
    a client, with a warning: it never speaks for the station."""
    for path in sorted(allowed_dir(data_dir).glob(f"{STATION_PREFIX}*.key")):
        own = key_dir(data_dir) / path.name
        target = stations_dir(data_dir) / path.name
        try:
            key = public_key(path)
            if own.exists() and public_key(own) != key:
                log.warning(
                    "%s is not the key of station %s (%s): allowed as a client only; remove it "
                    "unless someone needs it",
                    path,
                    path.stem,
                    own,
                )
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                if public_key(target) == key:
                    path.unlink()
                continue
            os.replace(path, target)
            log.info("allow-list: %s moved to %s (its role: station)", path, target)
        except (FileNotFoundError, ValueError, OSError):
            continue  # another daemon of the lab migrated it meanwhile, or not a key


def allow_station(data_dir: Path, node: str) -> None:
    """This station's own key on the lab's allow-list of stations (the nodes and the midpoint
    call each other: link layer, heralds), after migrating an allow-list of the old layout."""
    migrate_allow_list(data_dir)
    public, _ = node_keys(data_dir, node)
    target = stations_dir(data_dir) / public.name
    try:
        current = public_key(target) if target.exists() else None
    except ValueError:
        current = None
    if current != public_key(public):
        if current is not None:
            log.warning("allow-list: %s was not this station's key: replaced", target)
        copy_public(public, target)


def allowed_keys(data_dir: Path) -> dict[str, KeyEntry]:
    """z85 public key -> who it is, for every key on the allow-list (a key listed both as a
    station and as a client is a station)."""
    out: dict[str, KeyEntry] = {}
    for role, folder in ((CLIENT, allowed_dir(data_dir)), (STATION, stations_dir(data_dir))):
        for path in sorted(folder.glob("*.key")):
            try:
                out[public_key(path)] = KeyEntry(path.stem, role)
            except (ValueError, OSError) as e:
                log.warning("allow-list: %s unreadable, ignored (%s)", path, e)
    return out


class KeyNames:
    """z85 key -> allow-list entry, cached; re-read when an unknown key turns up."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._entries: dict[str, KeyEntry] = {}

    def entry(self, key: str | None) -> KeyEntry | None:
        if not key:
            return None
        if key not in self._entries:
            self._entries = allowed_keys(self.data_dir)
        return self._entries.get(key)

    def name(self, key: str | None) -> str | None:
        entry = self.entry(key)
        return None if entry is None else entry.name


class RateLimitedLog:
    """Warnings of one topic (a key, a kind of failure) at most once per `interval_s`; the
    lines held back are counted and said on the topic's next line."""

    MAX_TOPICS = 4096

    def __init__(self, logger: logging.Logger, interval_s: float = REFUSAL_LOG_INTERVAL_S):
        self.logger = logger
        self.interval_s = interval_s
        self._topics: dict[str, tuple[float, int]] = {}

    def warning(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._topics.get(topic, (-math.inf, 0))
        if now - last < self.interval_s:
            self._topics[topic] = (last, held + 1)
            return
        if len(self._topics) >= self.MAX_TOPICS:
            self._topics.clear()
        if held:
            message += " (%d more like it since the last line)"
            args = (*args, held)
        self.logger.warning(message, *args)
        self._topics[topic] = (now, 0)


class AllowList:
    """ZAP credentials provider: allow listed keys; count every refusal and log it (at most a
    line per key per 10 s)."""

    def __init__(self, data_dir: Path, who: str) -> None:
        self.data_dir = data_dir
        self.who = who
        self.refused = 0
        self._log = RateLimitedLog(log)

    def callback(self, domain: str, key: bytes | str) -> bool:
        key_text = key.decode() if isinstance(key, bytes) else key
        if key_text in allowed_keys(self.data_dir):
            return True
        self.refused += 1
        self._log.warning(
            key_text, "%s: refused a client with unknown CurveZMQ key %s", self.who, key_text
        )
        return False


def fingerprint(public_key_file: Path) -> str:
    public, _ = zmq.auth.load_certificate(str(public_key_file))
    raw = z85.decode(public)
    return raw[:8].hex()
