"""Item 12, wrong field types over the wire: for every request type a node daemon and the
midpoint daemon accept (their own, the operator's and the link layer's vocabularies), a
message with one field of a wrong type gets `malformed: <type>: field 'x' is ..., expected
...` (a notification gets no answer and is counted), and the daemon's log holds no traceback.
Fields whose content the schema checks too (a list of node names, the initiator's
expectation) and the fields every handler reads are declared in the schemas."""

import ast
import inspect
import time
from pathlib import Path

import pytest
import zmq

from controller.link import node_link
from controller.link.messages import FROM_MIDPOINT
from controller.messaging.curve import client_socket
from controller.messaging.keys import allow_station, node_keys
from controller.messaging.serving import read_info
from controller.messaging.wire import MessageError, Schema, pack, unpack
from controller.midpoint import calibration as midpoint_calibration
from controller.midpoint import daemon as midpoint_daemon
from controller.midpoint.messages import MIDPOINT
from controller.node import daemon as node_daemon
from controller.node.messages import NODE
from controller.operator.client import NodeClient, NodeRequestError
from controller.operator.daemons import start_daemon, terminate

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.timeout(300)]

SAMPLES = {str: "x", int: 1, float: 1.0, bool: True, list: [], dict: {}}


def kinds_of(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def sample(kind):
    first = kinds_of(kind)[0]
    return SAMPLES.get(first, first.__dict__.get("SAMPLE"))


def wrong_values(kind) -> list:
    """Values of a type the field does not take: a text, or for a text a number; and a bool
    where an integer is expected (a bool is an int to Python, never to the schema)."""
    kinds = kinds_of(kind)
    values = [1.5] if str in kinds else ["text"]
    if int in kinds and bool not in kinds:
        values.append(True)
    return values


def expected_error(schema: Schema, name: str, kind, value) -> str:
    names = " or ".join(k.__name__ for k in kinds_of(kind))
    return f"malformed: {schema.kind}: field {name!r} is {type(value).__name__}, expected {names}"


def cases(station: str, vocabulary) -> list:
    out = []
    for schema in vocabulary.values():
        for name, kind in [*schema.fields.items(), *schema.optional.items()]:
            for value in wrong_values(kind):
                case = (station, schema.kind, name, value)
                out.append(pytest.param(*case, id=f"{station}-{schema.kind}-{name}-{value!r}"))
    return out


CASES = cases("A", NODE) + cases("M", MIDPOINT)


@pytest.fixture(scope="module")
def daemons(lab, sim_process, data_dir, tmp_path_factory):
    """The midpoint's and node A's daemons, for the whole module."""
    logs = tmp_path_factory.mktemp("wire-logs")
    allow_station(data_dir, "B")  # the tests speak with B's key, as node A's peer
    started = {}
    try:
        for station in ("M", "A"):
            log = logs / f"{station}.log"
            proc = start_daemon(lab, station, log=log, resource_map=sim_process)
            started[station] = (proc, NodeClient.for_lab(lab, station, timeout_s=10), log)
        yield started
    finally:
        for proc, client, _ in started.values():
            client.close()
            terminate(proc)


@pytest.mark.parametrize(("station", "kind", "name", "value"), CASES)
def test_a_field_of_a_wrong_type_is_malformed_with_the_reason(daemons, station, kind, name, value):
    vocabulary = NODE if station == "A" else MIDPOINT
    schema = vocabulary[kind]
    fields = {n: sample(k) for n, k in schema.fields.items()}
    fields[name] = value
    _, client, log = daemons[station]
    if schema.notification:  # no answer: counted as malformed, never acted on
        before = client.status()["malformed"]
        client._socket().send(pack(kind, 1, **fields))
        deadline = time.monotonic() + 5
        while client.status()["malformed"] == before:
            assert time.monotonic() < deadline, "not counted as malformed"
            time.sleep(0.02)
    else:
        with pytest.raises(NodeRequestError) as refused:
            client.request(kind, **fields)
        both = schema.fields.get(name) or schema.optional[name]
        assert str(refused.value) == expected_error(schema, name, both, value)
    assert "Traceback" not in log.read_text()


def station_socket(data_dir: Path, who: str, target: str) -> zmq.Socket:
    """A DEALER to `target` with `who`'s station key (as the peer or a node would speak)."""
    _, secret = node_keys(data_dir, who)
    info = read_info(data_dir, target)
    sock = client_socket(zmq.Context.instance(), zmq.DEALER, secret, info["server_public_key"])
    sock.connect(info["endpoint"])
    return sock


def ask(sock: zmq.Socket, kind: str, **fields) -> dict:
    sock.send(pack(kind, 99, **fields))
    assert sock.poll(10_000), f"no answer to {kind}"
    return unpack(sock.recv())


LINK_REQUEST = dict(
    session="20261130-000000-abcdef",
    nodes=["B", "A"],
    pairs=1,
    protocol="single_click",
    fidelity_min=0.0,
    deadline_s=10.0,
)


@pytest.mark.parametrize(
    ("station", "who", "kind", "fields", "field"),
    [
        ("A", "B", "link_request", {**LINK_REQUEST, "nodes": ["B", 7]}, "nodes"),
        ("A", "B", "link_request", {**LINK_REQUEST, "nodes": [["B"], "A"]}, "nodes"),
        ("A", "B", "link_request", {**LINK_REQUEST, "expected": {"p_success": "x"}}, "expected"),
        ("A", "B", "link_request", {**LINK_REQUEST, "expected": {"notes": [1]}}, "expected"),
        ("A", "B", "link_request", {**LINK_REQUEST, "expected": {"alpha": [0.1]}}, "expected"),
        (
            "M",
            "A",
            "session_start",
            {"node": "A", "session": "s", "protocol": "single_click", "nodes": ["A", 2]},
            "nodes",
        ),
    ],
)
def test_a_field_of_the_right_type_with_wrong_contents_is_malformed(
    daemons, data_dir, station, who, kind, fields, field
):
    """The content of a list or map field, from a key entitled to send it: malformed, with
    the field named, never a TypeError or ValueError (with a traceback) from the handler."""
    sock = station_socket(data_dir, who, station)
    try:
        reply = ask(sock, kind, **fields)
    finally:
        sock.close(linger=0)
    assert reply["ok"] is False
    assert reply["error"].startswith(f"malformed: {kind}: field {field!r} is "), reply["error"]
    assert "Traceback" not in daemons[station][2].read_text()


def test_a_run_without_a_sequence_map_is_malformed(daemons):
    _, client, log = daemons["A"]
    with pytest.raises(NodeRequestError, match="malformed: run: missing field 'sequence'"):
        client.request("run")
    with pytest.raises(NodeRequestError, match="malformed: run: field 'sequence' is str"):
        client.request("run", sequence="rabi")
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("name", "kind"),
    [(n, k) for s in FROM_MIDPOINT.values() for n, k in [*s.fields.items(), *s.optional.items()]],
)
def test_the_midpoints_messages_to_a_node_are_checked_by_type(name, kind):
    """What arrives on a node's DEALER from the midpoint (checked by its StationLink: counted
    and dropped, never answered): every field of every type."""
    for schema in FROM_MIDPOINT.values():
        if name not in schema.fields and name not in schema.optional:
            continue
        for value in wrong_values(kind):
            fields = {n: sample(k) for n, k in schema.fields.items()}
            fields[name] = value
            with pytest.raises(MessageError) as raised:
                unpack(pack(schema.kind, 1, **fields), FROM_MIDPOINT)
            expected = expected_error(schema, name, kind, value).removeprefix("malformed: ")
            assert str(raised.value) == expected


def fields_read(module, variable: str = "msg") -> set[str]:
    """The names a module's handlers read of a message: msg["x"] and msg.get("x")."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        target = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            target, key = node.value, node.slice.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            target, key = node.func.value, node.args[0].value
        if isinstance(target, ast.Name) and target.id == variable and isinstance(key, str):
            names.add(key)
    return names


ENVELOPE = {"v", "id", "t", "type"}


@pytest.mark.parametrize(
    ("module", "vocabulary"),
    [
        (node_daemon, NODE),
        (node_link, {**NODE, **FROM_MIDPOINT}),
        (midpoint_daemon, MIDPOINT),
        (midpoint_calibration, MIDPOINT),
    ],
)
def test_every_field_a_handler_reads_is_declared(module, vocabulary):
    declared = {n for s in vocabulary.values() for n in [*s.fields, *s.optional]}
    assert fields_read(module) - declared - ENVELOPE == set()
