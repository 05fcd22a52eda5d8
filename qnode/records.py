"""The binary record layouts of the time tagger's data blocks: the documented wire format of
its `TAGS:DATA?` and `CLIC:DATA?` replies (IEEE 488.2 blocks of fixed-size little-endian
records, no padding).

Shared like a header: the host's driver (drivers/tagger_idq.py) reads these records and the
instrument (in the simulated lab, sim_backends/instruments/tagger.py) writes them; neither
imports the other. Layouts only, no I/O.
"""

from __future__ import annotations

import numpy as np

TAG_DTYPE = np.dtype([("time_ps", "<i8"), ("delay_ps", "<i8"), ("channel", "<u2")])
"""One time tag: ps since the acquisition started (-1 where the instrument does not report
it: the ID Quantique Time Controller gives it only before the first sync), ps since the last
sync (start) pulse (since the start when there is no sync), and the input (1-4)."""

CLICK_DTYPE = np.dtype(
    [
        ("sync", "<u8"),
        ("attempt", "<u8"),
        ("round", "u1"),
        ("channel", "<u2"),
        ("delay_ps", "<i8"),
    ]
)
"""One click of the herald logic (`CLIC:DATA?`, T3-like): the shared sync it followed (the
sync output's count), the attempt since that sync (1-based: the attempt trigger counter), the
attempt's detection round (Barrett-Kok has two), the input, and ps since that attempt's
excitation. Input 0 marks the end of an attempt's window (software heralding: every attempt
has one)."""
