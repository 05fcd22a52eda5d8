"""Conformance of the simulated ID Quantique Time Controller, driven as IDQ's own Python
examples drive a real one: a plain pyzmq REQ socket, one SCPI string per request, one reply
each (`send_string` / `recv`), errors recognised by `SCPI_ERR_` in the reply.

No independent open-source driver of the Time Controller exists (QCoDeS, pylablib and
microscope have none); IDQ's examples ship with the instrument's software, not as a package,
so this script re-states their calls (not their code): the counter set-up of the
coincidence-counter example (`INPU<n>:COUN:MODE CYCL;INTE <t>;RESEt`, all counters read in
one compound query, one line each), the recording of the histogram example
(`REC:TRIG:ARM:MODE MANUal`, `REC:ENABle ON`, `REC:STOP`, `REC:NUM 1`, `REC:DURation <ps>`,
`REC:PLAY`, `REC:STAGe?` until it stops), thresholds with units as the manual writes them.
The time stamps' data service (`data=` in the resource) is the simulated lab's own stand-in
for IDQ's DataLink stream (docs/instruments.md), checked last.

Usage: python conformance/check_idq.py RESOURCE_MAP_JSON  (imports nothing from qnode)
"""

from __future__ import annotations

import json
import sys
import time

import zmq

TAGGER = "M.tagger"
TIMEOUT_MS = 3000
TAG_RECORD_BYTES = 18  # int64 ps since start, int64 ps since the last sync, uint16 input


class Check:
    def __init__(self) -> None:
        self.failures = 0
        self.checked = 0

    def item(self, what: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        self.checked += 1
        if not ok:
            self.failures += 1


def connect(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.rcvtimeo = sock.sndtimeo = TIMEOUT_MS
    sock.connect(endpoint)
    return sock


def execute(sock: zmq.Socket, command: str) -> str:
    sock.send_string(command)
    return sock.recv().decode("utf-8")


def trim_unit(value: str, unit: str) -> float:
    return float(value[: -len(unit)] if value.endswith(unit) else value)


def main(resource_map: str) -> int:
    with open(resource_map) as f:
        resources = json.load(f)["resources"]
    if TAGGER not in resources:
        print(f"FAIL no {TAGGER} in the resource map")
        return 1
    scpi, _, rest = resources[TAGGER].partition(",")
    data_endpoint = rest.removeprefix("data=") or None
    ctx = zmq.Context.instance()
    tc = connect(ctx, scpi)
    check = Check()
    errors_seen: list[str] = []

    def run(command: str) -> str:
        answer = execute(tc, command)
        if "SCPI_ERR_" in answer:
            errors_seen.append(f"{command!r}: {answer}")
        return answer

    idn = run("*IDN?")
    check.item("*IDN? names ID Quantique", idn.startswith("IDQ,"), idn)

    for n in (1, 2, 3, 4):
        answer = run(f"INPUt{n}:ENABle ON")
        check.item(f"INPUt{n}:ENABle ON answers nothing", answer == "", repr(answer))
        check.item(f"INPU{n}:ENAB? is ON", run(f"INPU{n}:ENAB?") == "ON")
    for text, volts in (("-0.2V", -0.2), ("1000mV", 1.0), ("1", 1.0), ("-350 mV", -0.35)):
        run(f"INPU2:THRE {text}")
        got = trim_unit(run("INPU2:THRE?"), "V")
        check.item(f"INPU2:THRE {text} reads back {volts} V", abs(got - volts) < 1e-6, str(got))

    for n in (1, 2, 3, 4):  # the coincidence-counter example's set-up, 100 ms periods
        answer = run(f"INPU{n}:COUN:MODE CYCL;INTE 100;RESEt")
        check.item(f"INPU{n}:COUN:MODE CYCL;INTE 100;RESEt", answer == "", repr(answer))
    check.item("INPU3:COUN:INTE? is 100 (ms)", trim_unit(run("INPU3:COUN:INTE?"), "ms") == 100)
    check.item("INPU3:COUN:MODE? is CYCL", run("INPU3:COUN:MODE?").upper().startswith("CYCL"))
    time.sleep(0.1)
    answer = run(";:".join(f"INPU{n}:COUNter?" for n in (1, 2, 3, 4)))
    lines = answer.splitlines()
    check.item(
        "four counters in one compound query, one line each",
        len(lines) == 4 and all(line.strip().isdigit() for line in lines),
        repr(answer),
    )

    for command in ("REC:TRIG:ARM:MODE MANUal", "REC:ENABle ON", "REC:STOP", "REC:NUM 1"):
        check.item(f"{command} answers nothing", run(command) == "")
    for n in (1, 2):
        run(f"RAW{n}:SEND ON")
    run(f"REC:DURation {int(0.2 * 1e12)}")
    check.item("REC:DUR? is 0.2 s in TB", trim_unit(run("REC:DUR?"), "TB") == 0.2e12)
    run("REC:PLAY")
    started = time.monotonic()
    while run("REC:STAGe?").upper() == "PLAYING" and time.monotonic() - started < 5:
        time.sleep(0.05)
    stage = run("REC:STAGe?").upper()
    check.item("the recording stops after its duration", stage != "PLAYING", stage)

    bad = execute(tc, "INPU1:NOSUCH?")
    check.item("an unknown header gets one reply holding SCPI_ERR_", "SCPI_ERR_" in bad, bad)
    check.item("the instrument answers after the error", run("*IDN?") == idn)

    if data_endpoint:
        data = connect(ctx, data_endpoint)
        received = 0
        while True:
            data.send(b"NEXT")
            block = data.recv()
            digits = int(block[1:2]) if block[:1] == b"#" else -1
            if digits <= 0:
                check.item("a data-service reply is an IEEE 488.2 block", False, repr(block[:10]))
                break
            size = int(block[2 : 2 + digits])
            if size == 0:
                break
            received += size
        check.item(
            "time stamps from the data service are whole 18-byte records",
            received % TAG_RECORD_BYTES == 0,
            f"{received // TAG_RECORD_BYTES} records",
        )
        data.close(linger=0)
    for n in (1, 2):
        run(f"RAW{n}:SEND OFF")

    check.item("no SCPI_ERR_ reply to any valid command", not errors_seen, "; ".join(errors_seen))
    tc.close(linger=0)
    print(f"check_idq: {check.checked - check.failures} passed, {check.failures} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
