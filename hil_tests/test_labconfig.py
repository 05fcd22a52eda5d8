"""Lab configuration: the shipped files load; each kind of bad file gives one clear error."""

import tomllib
from pathlib import Path

import pytest

from controller.labconfig import load_lab
from qnode.errors import LabConfigError, QnodeError

LABS = Path(__file__).resolve().parent.parent / "labs"


@pytest.mark.parametrize("name", ["sim_two_node.toml", "sim_two_node_ion.toml"])
def test_shipped_labs_are_valid(name):
    lab = load_lab(LABS / name)
    assert set(lab.nodes) == {"A", "B", "M"}
    assert lab.nodes["A"].platform in ("nv", "ion")
    assert lab.instrument("A", "mw").limits["frequency_hz"][1] <= 12.75e9


def write_variant(tmp_path, edit) -> Path:
    """The default lab with one edit applied to its parsed TOML, written back as TOML."""
    raw = tomllib.loads((LABS / "sim_two_node.toml").read_text())
    edit(raw)
    path = tmp_path / "lab.toml"
    path.write_text(to_toml(raw))
    return path


def to_toml(data: dict, prefix: str = "") -> str:
    """Just enough TOML writing for these tests (tables, strings, numbers, lists, bools)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return repr(v)

    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    out = []
    if prefix and scalars:
        out.append(f"[{prefix}]")
    out += [f'"{k}" = {value(v)}' for k, v in scalars.items()]
    for k, v in tables.items():
        out.append(to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


def expect_error(path: Path, key_path: str, *fragments: str) -> None:
    with pytest.raises(LabConfigError) as err:
        load_lab(path)
    message = str(err.value)
    assert str(path) in message
    assert err.value.key_path == key_path, message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message  # one error, one line


def test_unknown_key(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["mw"].update(fequency=1)
    )
    expect_error(path, "nodes.A.instruments.mw.fequency", "unknown key")


def test_wrong_type(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["mw"].update(timeout_s="fast")
    )
    expect_error(path, "nodes.A.instruments.mw.timeout_s", "valid number", "'fast'")


def test_missing_instrument(tmp_path):
    path = write_variant(tmp_path, lambda r: r["nodes"]["B"]["instruments"].pop("seq"))
    expect_error(path, "nodes.B.instruments", "no instrument with role 'sequencer'")


def test_limit_outside_the_drivers_own_range(tmp_path):
    def edit(r):
        r["nodes"]["A"]["instruments"]["mw"]["limits"]["power_dbm"] = [-60.0, 40.0]

    path = write_variant(tmp_path, edit)
    expect_error(
        path, "nodes.A.instruments.mw.limits.power_dbm", "outside the driver's own range", "25"
    )


def test_missing_limit(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["laser_red"]["limits"].pop("power_w")
    )
    expect_error(path, "nodes.A.instruments.laser_red.limits.power_w", "missing limit")


def test_limit_not_a_pair(tmp_path):
    def edit(r):
        r["nodes"]["A"]["instruments"]["mw"]["limits"]["power_dbm"] = [0.0]

    path = write_variant(tmp_path, edit)
    expect_error(path, "nodes.A.instruments.mw.limits.power_dbm", "at least 2")


def test_unknown_driver(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["mw"].update(driver="hp8341")
    )
    expect_error(path, "nodes.A.instruments.mw.driver", "unknown driver 'hp8341'")


def test_driver_of_another_role(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["mw"].update(driver="cobolt")
    )
    expect_error(path, "nodes.A.instruments.mw.driver", "is a laser, not a microwave_source")


def test_ttl_line_used_twice(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["channels"]["ttl"].update(readout_aom=0)
    )
    expect_error(path, "nodes.A.channels.ttl.readout_aom", "already used by 'repump_aom'")


def test_optics_names_a_missing_laser(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["optics"]["pump"].update(laser="laser_blue")
    )
    expect_error(path, "nodes.A.optics.pump.laser", "'laser_blue' is not a laser")


def test_bad_resource(tmp_path):
    path = write_variant(
        tmp_path, lambda r: r["nodes"]["A"]["instruments"]["mw"].update(resource="GPIB::19")
    )
    expect_error(path, "nodes.A.instruments.mw.resource", "TCPIP::host::port::SOCKET")


def test_time_tagger_resource_is_a_zeromq_endpoint(tmp_path):
    def edit(raw):
        raw["nodes"]["M"]["instruments"]["tagger"]["resource"] = "TCPIP::10.0.0.6::5555::SOCKET"

    expect_error(write_variant(tmp_path, edit), "nodes.M.instruments.tagger.resource", "tcp://")
    good = write_variant(
        tmp_path,
        lambda r: r["nodes"]["M"]["instruments"]["tagger"].update(
            resource="tcp://10.0.0.6:5555,dlt=tcp://127.0.0.1:6060"
        ),
    )
    assert load_lab(good).instrument("M", "tagger").resource.startswith("tcp://10.0.0.6")


def test_a_midpoint_needs_a_herald_logic_and_a_memory_node_has_none(tmp_path):
    path = write_variant(tmp_path, lambda r: r["nodes"]["M"]["instruments"].pop("herald"))
    expect_error(path, "nodes.M.instruments", "no instrument with role 'herald_logic'")

    def extra(raw):
        raw["nodes"]["A"]["instruments"]["herald"] = dict(
            raw["nodes"]["M"]["instruments"]["herald"]
        )

    path = write_variant(tmp_path, extra)
    expect_error(path, "nodes.A.instruments", "a herald logic belongs to a midpoint")


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[lab\nname = 1\n")
    expect_error(path, "", "not valid TOML", "line 1")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.toml", "", "cannot read the file")


@pytest.mark.parametrize("limit", [["nan", 2.0], [0.0, "inf"]])
def test_a_limit_that_is_not_a_finite_number(tmp_path, limit):
    """TOML has nan and inf: a limit of either would let any value through."""

    def edit(r):
        r["nodes"]["A"]["instruments"]["awg"]["limits"]["waveform_points"] = [
            float(x) for x in limit
        ]

    path = write_variant(tmp_path, edit)
    expect_error(path, "nodes.A.instruments.awg.limits.waveform_points", "finite")


def test_a_lab_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes((LABS / "sim_two_node.toml").read_bytes() + "# Zürich\n".encode("latin-1"))
    expect_error(path, "", "not UTF-8 text", "xfc")


def test_a_data_dir_that_is_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("QNODE_DATA_DIR", raising=False)  # the file's own data_dir counts
    (tmp_path / "data").write_text("not a folder")
    path = write_variant(tmp_path, lambda r: r["lab"].update(data_dir=str(tmp_path / "data")))
    expect_error(path, "lab.data_dir", "is a file, not a folder")


@pytest.mark.parametrize("name", ["sim_three_node.toml", "sim_three_node_metro.toml"])
def test_three_node_labs_have_two_links_through_b(name):
    lab = load_lab(LABS / name)
    assert set(lab.nodes) == {"A", "B", "C", "M1", "M2"}
    assert set(lab.links_of("B")) == {"AB", "BC"} and set(lab.links_of("A")) == {"AB"}
    name_ab, ab = lab.link_between("B", "A")
    assert name_ab == "AB" and ab.midpoint == "M1" and ab.peer("B") == "A"
    assert all(lab.nodes[n].memories == ["c13"] for n in "ABC")
    with pytest.raises(QnodeError, match=r"no link between A and C .*AB \(A-B\), BC \(B-C\)"):
        lab.link_between("A", "C")


def test_metro_lab_fibres_are_10_and_25_km():
    lab = load_lab(LABS / "sim_three_node_metro.toml")
    km = {name: sum(link.fibre_km.values()) for name, link in lab.all_links.items()}
    assert km == {"AB": 10.0, "BC": 25.0}
    assert lab.all_links["BC"].delay_s("C") == pytest.approx(62.5e-6)  # 12.5 km at 5 us/km


def test_a_two_node_lab_without_links_has_its_one_link():
    lab = load_lab(LABS / "sim_two_node.toml")
    assert {n: (link.midpoint, link.nodes) for n, link in lab.all_links.items()} == {
        "AB": ("M", ["A", "B"])
    }
    assert lab.all_links["AB"].delay_s("A") == 0.0


def with_link(**link):
    def edit(raw):
        raw["links"] = {"AB": {"midpoint": "M", "nodes": ["A", "B"], **link}}

    return edit


def test_link_errors_name_the_key(tmp_path):
    path = write_variant(tmp_path, with_link(midpoint="A"))
    expect_error(path, "links.AB.midpoint", "'A' is not a midpoint node")
    path = write_variant(tmp_path, with_link(nodes=["A", "Z"]))
    expect_error(path, "links.AB.nodes", "'Z' is not a memory node")
    path = write_variant(tmp_path, with_link(nodes=["A", "A"]))
    expect_error(path, "links.AB.nodes", "two different nodes")
    path = write_variant(tmp_path, with_link(fibre_km={"C": 1.0}))
    expect_error(path, "links.AB.fibre_km.C", "C is not an end of this link")
    path = write_variant(tmp_path, with_link(fibre_km={"A": -1.0}))
    expect_error(path, "links.AB.fibre_km.A", "greater than or equal to 0")


def test_memories_only_on_nv_memory_nodes(tmp_path):
    def edit(raw):
        raw["nodes"]["M"]["memories"] = ["c13"]

    expect_error(write_variant(tmp_path, edit), "nodes.M.memories", "only an NV memory node")
