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
The time stamps as the timestamps-streaming example takes them from the host's DataLinkTarget
(`dlt=` in the resource; the manual's section 10): `list`, `start-stream --address <TC>
--channel <n> --stream-port <port> --with-ref-index` with a PAIR socket connected to that
port, `RAW<n>:SEND ON`, the recording, `status --id` until acquisitions_count reaches
`REC:NUM?`, `stop --id`, the stream read until an empty message, section 6.3.4's uint64
(timestamp, reference index) pairs counted against timestamps_count; an unknown option
answered in the manual's error form.

Usage: python conformance/check_idq.py RESOURCE_MAP_JSON  (imports nothing from qnode)
"""

from __future__ import annotations

import json
import socket
import sys
import time
from urllib.parse import urlsplit

import zmq

TAGGER = "M.tagger"
TIMEOUT_MS = 3000
PAIR_BYTES = 16  # uint64 timestamp (ps since the last reference event), uint64 reference index


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


def dlt_exec(sock: zmq.Socket, command: str):
    """As IDQ's examples: a JSON answer; an object with "error" is a failure."""
    return json.loads(execute(sock, command))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def trim_unit(value: str, unit: str) -> float:
    return float(value[: -len(unit)] if value.endswith(unit) else value)


def main(resource_map: str) -> int:
    with open(resource_map) as f:
        resources = json.load(f)["resources"]
    if TAGGER not in resources:
        print(f"FAIL no {TAGGER} in the resource map")
        return 1
    scpi, _, rest = resources[TAGGER].partition(",")
    dlt_endpoint = rest.removeprefix("dlt=") or None
    address = urlsplit(scpi).hostname
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

    dlt = connect(ctx, dlt_endpoint) if dlt_endpoint else None
    check.item("the resource names the host's DLT (dlt=tcp://...)", dlt is not None, rest)
    streams: dict[int, tuple[str, zmq.Socket]] = {}
    if dlt is not None:
        opened = dlt_exec(dlt, "list")
        check.item("DLT list answers a JSON list", isinstance(opened, list), repr(opened))
        for ident in opened if isinstance(opened, list) else []:
            dlt_exec(dlt, f"stop --id {ident}")  # as the examples close what was left open
        answer = dlt_exec(dlt, "list --xyz")
        check.item(
            "an unknown option is answered in the manual's error form",
            answer == {"error": {"description": "unrecognised option '--xyz'"}},
            json.dumps(answer),
        )
        for n in (1, 2):
            port = free_port()
            stream = ctx.socket(zmq.PAIR)
            stream.setsockopt(zmq.LINGER, 0)
            stream.rcvtimeo = TIMEOUT_MS
            stream.connect(f"tcp://127.0.0.1:{port}")
            answer = dlt_exec(
                dlt,
                f"start-stream --address {address} --channel {n} --stream-port {port} "
                "--with-ref-index",
            )
            ok = isinstance(answer, dict) and isinstance(answer.get("id"), str)
            check.item(f"start-stream of input {n} answers its id", ok, json.dumps(answer))
            if ok:
                streams[n] = (answer["id"], stream)
            else:
                stream.close(linger=0)
        listed = dlt_exec(dlt, "list")
        check.item(
            "DLT list holds the opened acquisitions",
            sorted(listed) == sorted(i for i, _ in streams.values()),
            json.dumps(listed),
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
    records = int(run("REC:NUMber?"))

    if dlt is not None:
        for n, (ident, stream) in streams.items():
            deadline = time.monotonic() + 5
            status = dlt_exec(dlt, f"status --id {ident}")
            while status.get("acquisitions_count", 0) < records and time.monotonic() < deadline:
                time.sleep(0.1)
                status = dlt_exec(dlt, f"status --id {ident}")
            check.item(
                f"status of input {n}: acquisitions_count reaches REC:NUM? ({records})",
                status.get("acquisitions_count") == records and status.get("errors") == [],
                json.dumps(status),
            )
            closed = dlt_exec(dlt, f"stop --id {ident}")
            counted = (closed.get("status") or {}).get("timestamps_count", -1)
            check.item(f"stop of input {n} answers its status", counted >= 0, json.dumps(closed))
            received = b""
            try:
                while message := stream.recv():
                    received += message
                ended = True
            except zmq.Again:
                ended = False
            check.item(f"input {n}'s stream ends with an empty message", ended)
            check.item(
                f"input {n}'s stream carries timestamps_count whole 16-byte pairs",
                len(received) == counted * PAIR_BYTES,
                f"{len(received)} bytes, {counted} timestamps",
            )
            indexes = [
                int.from_bytes(received[k + 8 : k + 16], "little")
                for k in range(0, len(received), PAIR_BYTES)
            ]
            check.item(
                f"input {n}: no reference event in an idle lab (every reference index 0)",
                all(i == 0 for i in indexes),
            )
            stream.close(linger=0)
        check.item("DLT list is empty after the stops", dlt_exec(dlt, "list") == [])
        dlt.close(linger=0)

    bad = execute(tc, "INPU1:NOSUCH?")
    check.item("an unknown header gets one reply holding SCPI_ERR_", "SCPI_ERR_" in bad, bad)
    check.item("the instrument answers after the error", run("*IDN?") == idn)
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
