"""What the midpoint daemon accepts, declared once: the nodes' session messages
(controller/link/messages.py), the operator's status and shutdown, the calibration routines'
requests, and herald faults for tests."""

from __future__ import annotations

from controller.link.messages import NUMBER, TO_MIDPOINT
from controller.messaging.wire import Schema, vocabulary
from controller.midpoint.faults import FAULT_MODES

CALIBRATION = vocabulary(
    Schema("tags_start", optional={"holder": str}),
    Schema("tags_stop"),
    Schema("dark_tags", {"seconds": NUMBER}),
    Schema("fringe_sweep", {"points": int, "seconds": NUMBER}),
    Schema("lock_samples", {"offset_deg": NUMBER, "seconds": NUMBER, "samples": int}),
)
MIDPOINT = vocabulary(
    TO_MIDPOINT,
    CALIBRATION,
    Schema("status"),
    Schema("shutdown"),
    Schema(
        "herald_fault",
        {"node": str, "mode": str, "count": int},
        {"delay_s": NUMBER, "after": int},
        {"mode": FAULT_MODES},
    ),
)
