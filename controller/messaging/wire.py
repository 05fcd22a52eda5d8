"""Messages on ZeroMQ: msgpack maps with version, type, id and time, validated on receipt.

numpy arrays travel as {"__ndarray__": dtype, "shape": [...], "data": bytes}; nothing is
pickled, and an object dtype is refused.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class MessageError(Exception):
    """A message that is not one of ours: it is counted and dropped, never acted on."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays do not travel")
        arr = np.ascontiguousarray(obj)
        descr = arr.dtype.str
        if arr.dtype.names:  # plain fields: no metadata (h5py adds some), no padding
            plain = np.dtype([(n, arr.dtype[n].str) for n in arr.dtype.names])
            arr = np.ascontiguousarray(arr.astype(plain))
            descr = [(n, arr.dtype[n].str) for n in arr.dtype.names]
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


def unpack(data: bytes, allowed_types: set[str] | None = None) -> dict:
    """Decode and check the envelope; raises MessageError with what was wrong."""
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
    if not isinstance(kind, str) or (allowed_types is not None and kind not in allowed_types):
        raise MessageError(f"unknown message type {kind!r}")
    if not isinstance(msg.get("id"), int) or isinstance(msg.get("id"), bool):
        raise MessageError("missing or non-integer 'id'")
    if not isinstance(msg.get("t"), (int, float)):
        raise MessageError("missing time stamp 't'")
    return msg


def require(msg: dict, fields: dict[str, type | tuple[type, ...]]) -> dict:
    """Check a message's own fields (name -> type); raises MessageError naming the first
    missing or mistyped one. Booleans are not numbers here."""
    for name, kind in fields.items():
        if name not in msg:
            raise MessageError(f"{msg.get('type')}: missing field {name!r}")
        value = msg[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise MessageError(
                f"{msg.get('type')}: field {name!r} is {type(value).__name__}, expected "
                + " or ".join(k.__name__ for k in kinds)
            )
    return msg
