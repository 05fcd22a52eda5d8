"""Names that become parts of file names (sequence, run id, session id, node): checked against
one strict pattern at the door and where the path is built; every path stays inside the data
folder. The reproductions: a sequence name that climbed out of the day folder truncated a
completed run file, and another created a file outside the data folder."""

import hashlib
from pathlib import Path

import pytest

from controller.data.names import BadName, check_name, inside, run_path, session_path
from controller.data.params import ParameterStore
from controller.data.sessionfile import find_session_files
from controller.operator.client import NodeRequestError
from sequences.library import rabi
from sequences.operations import Sweep, SweepAxis, to_data


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.usefixtures("sim")
def test_sequence_names_that_climb_out_are_refused_and_touch_nothing(start_daemon, data_dir, sim):
    with ParameterStore(data_dir / "params.sqlite") as store:
        store.set_manual("A", "mw_frequency_hz", sim.truth("A")["qubit_hz"], "test: truth")
    daemon = start_daemon("A")
    one_point = Sweep((SweepAxis("duration_ns", (0.0,)),))
    done = daemon.client.run(rabi("nv", shots=5), one_point)
    assert done.status == "completed"
    existing = Path(done.file)
    before = digest(existing)
    outside = data_dir.parent / "outside"
    for name in (f"/../{existing.stem}", "/../../../../outside/pwned"):
        sequence = to_data(rabi("nv", shots=5), one_point)
        sequence["name"] = name
        with pytest.raises(NodeRequestError) as refused:
            daemon.client.request("run", sequence=sequence)
        assert "sequence" in str(refused.value) and "not allowed" in str(refused.value)
    assert digest(existing) == before
    assert not outside.exists()
    assert not list(data_dir.parent.rglob("pwned*"))
    assert daemon.client.status()["state"] == "idle"
    again = daemon.client.run(rabi("nv", shots=5), one_point)  # the node is still usable
    assert again.status == "completed"


@pytest.mark.parametrize(
    "bad", ["", "..", "a..b", "/x", "../x", "x/../y", ".hidden", "-x", "a b", "a\\b", "é", "x" * 65]
)
def test_check_name_refuses_and_names_the_field(bad):
    with pytest.raises(BadName, match="session id"):
        check_name("session id", bad)


def test_check_name_accepts_what_the_daemons_make():
    for good in ("20261130-081500-ab12cd", "A", "node-B", "rabi", "ramsey_v2.1", "x" * 64):
        assert check_name("name", good) == good
    with pytest.raises(BadName):
        check_name("name", 12)


def test_path_builders_refuse_peer_chosen_session_ids_and_node_names(tmp_path):
    for session in ("../../outside", "/etc/x", "s/../../y", "s*"):
        with pytest.raises(BadName, match="session id"):
            session_path(tmp_path, session, "B")
        with pytest.raises(BadName, match="session id"):
            find_session_files(tmp_path, session, "B")
    with pytest.raises(BadName, match="node"):
        session_path(tmp_path, "20261130-081500-ab12cd", "../M", "heralds")
    with pytest.raises(BadName, match="node"):
        run_path(tmp_path, "20261130-081500-ab12cd", "A/..", "rabi")
    with pytest.raises(BadName, match="run id"):
        run_path(tmp_path, "../r", "A", "rabi")
    good = session_path(tmp_path, "20261130-081500-ab12cd", "B")
    assert good.name == "20261130-081500-ab12cd_B_entangle.h5"
    assert good.resolve().is_relative_to(tmp_path.resolve())
    assert not list(tmp_path.rglob("*"))  # building a path creates nothing


def test_inside_refuses_a_path_that_resolves_outside(tmp_path):
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "runs"
    link.symlink_to(tmp_path)  # a symlink out of the data folder
    with pytest.raises(BadName, match="outside the data folder"):
        inside(tmp_path / "data", link / "x.h5")
    assert inside(tmp_path / "data", tmp_path / "data" / "y.h5")
