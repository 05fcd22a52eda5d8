"""Item 12, `qnode params set`: bad input gets one clear error, no traceback, and nothing
recorded: an unknown node, a misspelt parameter (with the close name; --new for a deliberate
custom one), a value beyond a lab limit or not finite, a full disk."""

import os
import subprocess
import sys

import pytest
from conftest import small_tmpfs

from controller.data.params import ParameterError, ParameterStore, lab_limit
from controller.labconfig import DEFAULT_LAB, load_lab

QNODE = [sys.executable, "-m", "controller.cli"]


@pytest.fixture
def qnode(tmp_path):
    """qnode(*args) -> the finished `qnode` process, on a data folder of its own."""
    env = {**os.environ, "COLUMNS": "250", "QNODE_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*QNODE, *args], capture_output=True, text=True, timeout=60, env=env)

    run.data_dir = tmp_path  # type: ignore[attr-defined]
    return run


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    for word in words:
        assert word in text, text


def rows(data_dir, node: str = "A") -> int:
    path = data_dir / "params.sqlite"
    if not path.exists():
        return 0
    with ParameterStore(path) as store:
        return sum(len(store.history(node, name)) for name in store.names(node))


def test_an_unknown_node_is_refused_naming_the_labs_nodes(qnode):
    result = qnode("params", "set", "pi_amplitude_v", "0.4", "--reason", "r", "--node", "C")
    refused(result, "no node 'C'", "A, B, M")
    assert rows(qnode.data_dir, "C") == 0


def test_a_misspelt_parameter_is_refused_with_the_close_name(qnode):
    result = qnode("params", "set", "pi_amplitde_v", "0.4", "--reason", "r")
    refused(result, "unknown parameter 'pi_amplitde_v'", "did you mean 'pi_amplitude_v'", "--new")
    assert rows(qnode.data_dir) == 0
    custom = qnode("params", "set", "my_offset_v", "0.1", "--reason", "r", "--new")
    assert custom.returncode == 0, custom.stderr
    assert "custom parameter" in custom.stderr
    again = qnode("params", "set", "my_offset_v", "0.2", "--reason", "r")  # known now
    assert again.returncode == 0, again.stderr
    assert rows(qnode.data_dir) == 2


@pytest.mark.parametrize(
    ("name", "value", "limit"),
    [
        ("mw_frequency_hz", "5e9", "[2.6e+09, 3.2e+09] Hz"),  # the microwave source's limit
        ("mw_frequency_hz", "2.5e9", "[2.6e+09, 3.2e+09] Hz"),
        ("esr_stop_hz", "4e9", "[2.6e+09, 3.2e+09] Hz"),
        ("mw_power_dbm", "20", "[-60, 16] dBm"),
        ("pi_amplitude_v", "1.5", "[0, 1] V"),  # the AWG at 2 Vpp: a peak of at most 1 V
        ("pi2_amplitude_v", "-0.1", "[0, 1] V"),
        ("laser_red_power_w", "0.01", "[0, 0.001] W"),  # a laser by its name
        ("repump_power_w", "0.06", "[0, 0.05] W"),  # ... or by its optical path
    ],
)
def test_a_value_beyond_a_lab_limit_is_refused_at_once(qnode, name, value, limit):
    result = qnode("params", "set", name, value, "--reason", "r")
    refused(result, f"A.{name}", "beyond the lab limit", limit)
    assert rows(qnode.data_dir) == 0


def test_values_within_the_limits_are_recorded(qnode):
    for name, value in [
        ("mw_frequency_hz", "2.87e9"),
        ("pi_amplitude_v", "1.0"),
        ("readout_power_w", "0.0005"),
        ("detuning_hz", "-5e3"),  # a negative value is a value, not an option
    ]:
        result = qnode("params", "set", name, value, "--reason", "r")
        assert result.returncode == 0, result.stderr
    assert rows(qnode.data_dir) == 4


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_value_that_is_not_finite_is_refused(qnode, value):
    result = qnode("params", "set", "detuning_hz", value, "--reason", "r")
    refused(result, "A.detuning_hz", "not finite")
    assert rows(qnode.data_dir) == 0


def test_every_instrument_bounded_parameter_maps_to_a_limit_of_the_lab():
    lab = load_lab(DEFAULT_LAB)
    for name in ("mw_frequency_hz", "mw_power_dbm", "pi_amplitude_v", "laser_green_power_w"):
        assert lab_limit(lab, "A", name) is not None, name
    assert lab_limit(lab, "A", "readout_threshold") is None
    assert lab_limit(lab, "M", "mw_frequency_hz") is None  # the midpoint has no microwave


# a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (root only), unmounted after."""
    with small_tmpfs(tmp_path / "disk", "256k") as folder:
        yield folder


def fill(folder) -> os.PathLike:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def assert_unchanged(path, values: list[float]) -> None:
    with ParameterStore(path) as store:
        assert [r.value for r in store.history("A", "pi_amplitude_v")] == values
        assert store.verify().intact


def test_params_set_on_a_full_disk_is_one_clear_error_and_the_store_unchanged(small_disk):
    env = {**os.environ, "COLUMNS": "250", "QNODE_DATA_DIR": str(small_disk)}
    path = small_disk / "params.sqlite"
    with ParameterStore(path) as store:
        store.set_manual("A", "pi_amplitude_v", 0.42, "before the disk filled")
    filler = fill(small_disk)
    result = subprocess.run(
        [*QNODE, "params", "set", "pi_amplitude_v", "0.5", "--reason", "r"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    os.unlink(filler)
    refused(result, "disk is full", "nothing was recorded")
    assert_unchanged(path, [0.42])


def test_a_store_open_when_the_disk_fills_refuses_with_the_reason(small_disk):
    path = small_disk / "params.sqlite"
    with ParameterStore(path) as store:
        store.set_manual("A", "pi_amplitude_v", 0.42, "before the disk filled")
        filler = fill(small_disk)
        try:
            with pytest.raises(ParameterError, match="disk is full") as raised:
                for k in range(200):  # until the WAL can grow no more
                    store.set_manual("A", "pi_amplitude_v", 0.5, "x" * 2000 + str(k))
            assert "nothing was recorded" in str(raised.value)
        finally:
            os.unlink(filler)
        written = len(store.history("A", "pi_amplitude_v"))
        store.set_manual("A", "pi_amplitude_v", 0.44, "after the disk was freed")
    with ParameterStore(path) as store:
        assert len(store.history("A", "pi_amplitude_v")) == written + 1
        assert store.verify().intact
