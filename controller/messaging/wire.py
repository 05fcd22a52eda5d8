"""Messages on ZeroMQ: msgpack maps with version, type, id and time, validated on receipt.

numpy arrays travel as {"__ndarray__": dtype, "shape": [...], "data": bytes}; nothing is
pickled, and an object dtype is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from qnode.errors import QnodeError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message any qnode socket receives (ZMQ_MAXMSGSIZE on every CurveZMQ socket:
this and CurveZMQ's 33 bytes, curve.MAXMSGSIZE; libzmq closes the connection of a larger
one before allocating it) or decodes. Above the largest legitimate reply, a session's data:
about 210 bytes per delivered pair (its pair and herald rows), so some 300 000 pairs, the
measured 500 pairs/s through a 600 s deadline. A reply that would be larger is answered with
an error instead."""


class MessageError(Exception):
    """A message that is not one of ours: it is counted and dropped, never acted on."""


class Refused(QnodeError):
    """A well-formed message from a sender not entitled to it (its key is not the one the
    message needs): refused with this reason, counted and logged."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays do not travel")
        arr = np.ascontiguousarray(obj)
        names = arr.dtype.names
        descr: str | list[tuple[str, str]] = arr.dtype.str
        if names:  # plain fields: no metadata (h5py adds some), no padding
            plain = np.dtype([(n, arr.dtype[n].str) for n in names])
            arr = np.ascontiguousarray(arr.astype(plain))
            descr = [(n, arr.dtype[n].str) for n in names]
        return {
            "__ndarray__": descr,
            "shape": list(arr.shape),
            "data": arr.tobytes(),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__}")


def _hook(obj: dict) -> Any:
    if "__ndarray__" in obj:
        descr = obj["__ndarray__"]
        dtype = np.dtype([tuple(f) for f in descr] if isinstance(descr, list) else descr)
        if dtype.hasobject:
            raise MessageError("object arrays are refused")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(obj["shape"]).copy()
    return obj


def pack(kind: str, msg_id: int, **fields: Any) -> bytes:
    body = {"v": PROTOCOL_VERSION, "type": kind, "id": msg_id, "t": time.time(), **fields}
    return msgpack.packb(body, default=_default, use_bin_type=True)


def unpack(data: bytes, allowed: Vocabulary | None = None) -> dict:
    """Decode and check the envelope and, with a vocabulary, the message type's own fields;
    raises MessageError with what was wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes is too large")
    try:
        msg = msgpack.unpackb(data, raw=False, object_hook=_hook, strict_map_key=True)
    except MessageError:
        raise
    except Exception as e:
        raise MessageError(f"not msgpack: {type(e).__name__}") from None
    if not isinstance(msg, dict):
        raise MessageError("a message is a map")
    if msg.get("v") != PROTOCOL_VERSION:
        raise MessageError(f"protocol version {msg.get('v')!r}, expected {PROTOCOL_VERSION}")
    kind = msg.get("type")
    if not isinstance(kind, str) or (allowed is not None and kind not in allowed):
        raise MessageError(f"unknown message type {kind!r}")
    if not isinstance(msg.get("id"), int) or isinstance(msg.get("id"), bool):
        raise MessageError("missing or non-integer 'id'")
    if not isinstance(msg.get("t"), (int, float)):
        raise MessageError("missing time stamp 't'")
    if allowed is not None:
        allowed[kind].check(msg)
    return msg


Kind = type | tuple[type, ...]


def _is(value: Any, kind: Kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _names(kind: Kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


@dataclass(frozen=True)
class Schema:
    """One message type and its own fields beyond the envelope: required ones with their
    type, optional ones with theirs (an optional field may also be absent or None), and the
    values a field may take. A notification is fire-and-forget: never answered."""

    kind: str
    fields: Mapping[str, Kind] = field(default_factory=dict)
    optional: Mapping[str, Kind] = field(default_factory=dict)
    choices: Mapping[str, tuple] = field(default_factory=dict)
    notification: bool = False

    def check(self, msg: dict) -> dict:
        for name, kind in self.fields.items():
            if name not in msg:
                raise MessageError(f"{self.kind}: missing field {name!r}")
            if not _is(msg[name], kind):
                raise MessageError(
                    f"{self.kind}: field {name!r} is {type(msg[name]).__name__}, expected "
                    + _names(kind)
                )
        for name, kind in self.optional.items():
            value = msg.get(name)
            if value is not None and not _is(value, kind):
                raise MessageError(
                    f"{self.kind}: field {name!r} is {type(value).__name__}, expected "
                    + _names(kind)
                )
        for name, allowed in self.choices.items():
            if name in msg and msg[name] is not None and msg[name] not in allowed:
                choices = ", ".join(map(str, allowed))
                raise MessageError(f"{self.kind}: {name} {msg[name]!r} is not one of {choices}")
        return msg


Vocabulary = Mapping[str, Schema]


def vocabulary(*parts: Schema | Vocabulary) -> dict[str, Schema]:
    """Message type -> schema, from schemas and other vocabularies; a type declared twice is
    a programming error."""
    table: dict[str, Schema] = {}
    for part in parts:
        for schema in [part] if isinstance(part, Schema) else part.values():
            if schema.kind in table:
                raise ValueError(f"message type {schema.kind!r} declared twice")
            table[schema.kind] = schema
    return table


REPLY = Schema("reply", {"ok": bool}, {"error": str})
