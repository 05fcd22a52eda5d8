"""The node daemon's own requests (its control API), declared once; the link layer's
messages (controller/link/messages.py) arrive on the same socket."""

from __future__ import annotations

from controller.link.messages import OPERATOR, PEER
from controller.messaging.wire import Schema, vocabulary

CONTROL = vocabulary(
    Schema("status"),
    Schema("run", {"sequence": dict}),  # its content: sequences.operations.from_data
    Schema("abort", optional={"session": str}),
    Schema("safe_state"),
    Schema("result", {"run_id": str}),
    Schema("params"),
    Schema("shutdown"),
)
NODE = vocabulary(CONTROL, OPERATOR, PEER)
"""Everything a node daemon accepts."""
