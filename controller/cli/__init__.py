"""The `qnode` command line."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from controller.labconfig import DEFAULT_LAB, LabConfig, load_lab, read_resource_map
from qnode.errors import QnodeError

app = typer.Typer(help="qnode: control software of a quantum-network node.", no_args_is_help=True)
sim_app = typer.Typer(help="The simulated lab.", no_args_is_help=True)
instruments_app = typer.Typer(help="Instruments of a lab.", no_args_is_help=True)
lab_app = typer.Typer(help="Lab configuration files.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(instruments_app, name="instruments")
app.add_typer(lab_app, name="lab")
node_app = typer.Typer(help="The node daemon.", no_args_is_help=True)
keys_app = typer.Typer(help="CurveZMQ keys of the lab.", no_args_is_help=True)
params_app = typer.Typer(help="The parameter store.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(keys_app, name="keys")
app.add_typer(params_app, name="params")
midpoint_app = typer.Typer(help="The midpoint station's daemon.", no_args_is_help=True)
app.add_typer(midpoint_app, name="midpoint")

console = Console()
err_console = Console(stderr=True)

LabOption = typer.Option(DEFAULT_LAB, "--lab", help="Lab configuration file (TOML).")
ResourceMapOption = typer.Option(
    None,
    "--resource-map",
    help="Resource map of the simulated lab (default: in the lab's data dir).",
)


def _load(lab_path: Path) -> LabConfig:
    try:
        return load_lab(lab_path)
    except QnodeError as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


@lab_app.command("check")
def lab_check(lab: Path = typer.Argument(..., help="Lab file to validate.")) -> None:
    """Validate a lab file without touching any instrument."""
    config = _load(lab)
    n = sum(1 for _ in config.all_instruments())
    console.print(f"{lab}: valid ({len(config.nodes)} nodes, {n} instruments)")


@sim_app.command("up")
def sim_up(
    lab: Path = LabOption,
    seed: int = typer.Option(1, "--seed", help="Seed of the hidden true parameters."),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Serve every simulated instrument of the lab in the foreground, until Ctrl-C/SIGTERM."""
    from sim_backends.lab import SimLab

    config = _load(lab)
    map_path = resource_map or config.resource_map_path
    state_dir = map_path.parent / f"{config.lab.name}.state"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sim = SimLab(config.model_dump(), seed, state_dir, map_path)

    def ready(info: dict) -> None:
        table = Table(title=f"simulated lab '{config.lab.name}' (seed {seed}): Ctrl-C stops it")
        table.add_column("instrument")
        table.add_column("resource")
        for name, resource in info["resources"].items():
            table.add_row(name, resource)
        console.print(table)
        console.print(f"resource map: {map_path}")
        sys.stdout.flush()

    asyncio.run(sim.run(on_ready=ready))


@sim_app.command("fault")
def sim_fault(
    instrument: str = typer.Argument(..., help="e.g. A.mw"),
    fault: str = typer.Argument(..., help="freeze, unfreeze, garble, drop, reset, delay, clear"),
    seconds: float = typer.Option(0.0, help="Reply delay, for 'delay'."),
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Inject a fault into a running simulated lab."""
    from sim_backends.client import SimControl, SimControlError

    config = _load(lab)
    try:
        control = SimControl(resource_map or config.resource_map_path)
        control.fault(instrument, fault, seconds=seconds)
    except (SimControlError, OSError, KeyError) as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    console.print(f"{fault} -> {instrument}")


@instruments_app.command("check")
def instruments_check(lab: Path = LabOption, resource_map: Path | None = ResourceMapOption) -> None:
    """Connect to every instrument and print a health table; non-zero exit if any is unwell."""
    from controller.operator.instruments_check import check_lab, render_table

    config = _load(lab)
    resources = None
    if any(inst.simulated for _, _, inst in config.all_instruments()):
        try:
            resources = read_resource_map(config, resource_map)
        except QnodeError as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
    rows = check_lab(config, resources)
    console.print(render_table(rows, f"instruments of {config.lab.name}"))
    bad = [row.name for row in rows if not row.healthy]
    if bad:
        err_console.print(f"[red]{len(bad)} unhealthy:[/] {', '.join(bad)}")
        raise typer.Exit(1)
    console.print(f"[green]all {len(rows)} instruments healthy[/]")


NodeOption = typer.Option("A", "--node", help="Node name in the lab file.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


@node_app.command("serve")
def node_serve(
    lab: Path = LabOption,
    node: str = NodeOption,
    resource_map: Path | None = ResourceMapOption,
    endpoint: str = typer.Option(
        "tcp://127.0.0.1:0", help="Where to bind the control API (port 0: any free port)."
    ),
) -> None:
    """Run the node daemon in the foreground (Ctrl-C / SIGTERM: safe state, clean exit)."""
    from controller.node.daemon import serve

    config = _load(lab)
    if node not in config.nodes or config.nodes[node].kind != "memory":
        raise _fail(f"{node!r} is not a memory node of {lab}", 2)
    _serve(config, node, resource_map, lambda resources: serve(config, node, resources, endpoint))


@midpoint_app.command("serve")
def midpoint_serve(
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
    endpoint: str = typer.Option(
        "tcp://127.0.0.1:0", help="Where to bind the ROUTER (port 0: any free port)."
    ),
    allow_faults: bool = typer.Option(
        False, "--allow-faults", help="Accept herald fault injection (tests, soak; sim labs)."
    ),
) -> None:
    """Run the midpoint daemon in the foreground: heralds for the nodes' sessions."""
    from controller.labconfig import midpoint_name
    from controller.midpoint.daemon import serve

    config = _load(lab)
    try:
        name = midpoint_name(config)
    except QnodeError as e:
        raise _fail(str(e), 2) from None
    _serve(
        config,
        name,
        resource_map,
        lambda resources: serve(config, resources, endpoint, allow_faults),
    )


def _serve(config: LabConfig, station: str, resource_map: Path | None, run) -> None:
    """A daemon in the foreground: its simulated instruments' addresses, logging, and any
    error it stops with as one clear line (exit code 2)."""
    try:
        resources = None
        if any(inst.simulated for inst in config.nodes[station].instruments.values()):
            resources = read_resource_map(config, resource_map)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        run(resources)
    except QnodeError as e:
        raise _fail(str(e), 2) from None


@midpoint_app.command("status")
def midpoint_status(lab: Path = LabOption) -> None:
    """The midpoint daemon: state, connected nodes, the session, counters."""
    from controller.labconfig import midpoint_name
    from controller.operator.client import NodeClient

    config = _load(lab)
    try:
        with NodeClient.for_lab(config, midpoint_name(config), timeout_s=5) as client:
            status = client.status()
    except (QnodeError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    colour = {"idle": "green", "fault": "red"}.get(status["state"], "white")
    console.print(f"midpoint {status['node']}: [{colour}]{status['state']}[/]")
    if status["fault_reason"]:
        console.print(f"  fault: {status['fault_reason']}")
    console.print(f"  connected nodes: {', '.join(status['connected']) or 'none'}")
    if status["session"]:
        s = status["session"]
        console.print(f"  session {s['session']} ({s['protocol']}): {s['heralds']} heralds")
    console.print(
        "  heralds sent {heralds}, undeliverable {undeliverable}, malformed {malformed}, "
        "forged {forged}".format(**status)
    )
    if status["state"] == "fault":
        raise typer.Exit(1)


@app.command("entangle")
def entangle(
    lab: Path = LabOption,
    pairs: int = typer.Option(..., "--pairs", min=1, help="Pairs to deliver."),
    protocol: str = typer.Option("single-click", "--protocol", help="single-click or barrett-kok."),
    fidelity_min: float = typer.Option(
        0.0, "--fidelity-min", min=0.0, max=0.999, help="Alpha is chosen to meet it."
    ),
    verify: bool = typer.Option(False, "--verify", help="Measure in XX, YY, ZZ: the fidelity."),
    basis: str = typer.Option(
        "keep", "--basis", help="Without --verify: keep the pairs, or measure in X, Y or Z."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Override the chosen alpha."),
    deadline_s: float = typer.Option(600.0, "--deadline", help="Give up after this (s)."),
    node: str = typer.Option("A", "--node", help="The initiating node."),
    heralding: str = typer.Option(
        "hardware",
        "--heralding",
        help="hardware (the herald line) or software (every attempt's outcome via ZeroMQ).",
    ),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Heralded entanglement between the two nodes: N pairs, a live view, a summary."""
    from controller.operator.entangle import entangle_command

    config = _load(lab)
    names = {"single-click": "single_click", "barrett-kok": "barrett_kok"}
    if protocol not in names:
        raise _fail(f"--protocol {protocol!r}: single-click or barrett-kok", 2)
    if heralding not in ("hardware", "software"):
        raise _fail(f"--heralding {heralding!r}: hardware or software", 2)
    if basis not in ("keep", "X", "Y", "Z"):
        raise _fail(f"--basis {basis!r}: keep, X, Y or Z", 2)
    if alpha is not None and not 0 < alpha < 1:
        raise _fail(f"--alpha {alpha}: must be in (0, 1)", 2)
    if node not in config.nodes or config.nodes[node].kind != "memory":
        raise _fail(f"{node!r} is not a memory node of {lab}", 2)
    if resource_map is None and any(inst.simulated for _, _, inst in config.all_instruments()):
        resource_map = config.resource_map_path
    try:
        report = entangle_command(
            config,
            resource_map,
            console,
            pairs=pairs,
            protocol=names[protocol],
            fidelity_min=fidelity_min,
            delivery="verify" if verify else basis,
            alpha=alpha,
            deadline_s=deadline_s,
            node=node,
            heralding=heralding,
        )
    except QnodeError as e:
        raise _fail(str(e)) from None
    if report.summary["state"] != "completed" or not report.agree:
        raise typer.Exit(1)


@node_app.command("status")
def node_status(lab: Path = LabOption, node: str = NodeOption) -> None:
    """State of a node daemon: idle, busy or fault (with the reason), and its current run."""
    from controller.operator.client import NodeClient

    try:
        with NodeClient.for_lab(_load(lab), node, timeout_s=5) as client:
            status = client.status()
    except (QnodeError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    colour = {"idle": "green", "busy": "yellow", "fault": "red"}.get(status["state"], "white")
    console.print(f"node {node}: [{colour}]{status['state']}[/]")
    if status["fault_reason"]:
        console.print(f"  fault: {status['fault_reason']}")
    run = status.get("run")
    if run:
        console.print(
            f"  run {run['run_id']} ({run['name']}): {run['status']}, "
            f"{run['points_done']}/{run['points_total']} points, file {run['file']}"
        )
    if status["state"] == "fault":
        raise typer.Exit(1)


def _parse_sweep(specs: list[str]):
    from sequences.operations import Sweep, SweepAxis
    from sequences.parameters import unit_of

    axes = []
    for spec in specs:
        name, eq, rest = spec.partition("=")
        parts = rest.split(":")
        if not eq or not name or len(parts) != 3:
            raise _fail(f"--sweep {spec!r}: write NAME=START:STOP:N, e.g. duration_ns=0:400:41", 2)
        try:
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
            axes.append(SweepAxis.linspace(name, start, stop, n, unit_of(name)))
        except ValueError as e:
            raise _fail(f"--sweep {spec!r}: {e}", 2) from None
    return Sweep(tuple(axes))


@app.command("run")
def run_sequence(
    sequence: str = typer.Argument(..., help="rabi, esr, ramsey or readout"),
    sweep: list[str] = typer.Option([], "--sweep", help="NAME=START:STOP:N (repeatable)."),
    shots: int = typer.Option(200, "--shots", min=1),
    lab: Path = LabOption,
    node: str = NodeOption,
    plot: bool = typer.Option(True, help="Save a PNG of the bright fraction beside the run file."),
) -> None:
    """Run a named sequence on a node with a progress bar; the run file is saved by the node."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from controller.operator.client import NodeClient
    from sequences.library import LIBRARY

    if sequence not in LIBRARY:
        raise _fail(f"unknown sequence {sequence!r} (known: {', '.join(LIBRARY)})", 2)
    config = _load(lab)
    if node not in config.nodes or config.nodes[node].kind != "memory":
        raise _fail(f"{node!r} is not a memory node of {lab}", 2)
    seq = LIBRARY[sequence](config.nodes[node].platform, shots=shots)
    sweep_ = _parse_sweep(sweep)
    try:
        with NodeClient.for_lab(config, node) as client:
            started = client.start(seq, sweep_)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(f"{sequence} on {node}", total=started["points_total"])

                def show(run: dict) -> None:
                    bar.update(task, completed=run["points_done"])

                try:
                    finished = client.wait(started["run_id"], show)
                except KeyboardInterrupt:
                    client.abort()
                    finished = client.wait(started["run_id"])
            data = client.result(started["run_id"])
    except (QnodeError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    console.print(
        f"run {finished['run_id']}: {finished['status']} "
        f"({finished['points_done']}/{finished['points_total']} points) -> {finished['file']}"
    )
    if finished["status"] == "failed":
        raise _fail(finished["reason"])
    if plot and data.counts.shape[0] and len(data.axes) == 1:
        from controller.operator.plots import plot_sweep

        png = plot_sweep(data, Path(finished["file"]).with_suffix(".png"))
        console.print(f"plot: {png}")


@keys_app.command("generate")
def keys_generate(name: str, lab: Path = LabOption) -> None:
    """Make a client key pair and put its public key on the lab's allow-list."""
    from controller.messaging.keys import generate_client

    config = _load(lab)
    try:
        public = generate_client(config.data_dir, name)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    console.print(f"client key '{name}': {public} (allowed)")


@keys_app.command("list")
def keys_list(lab: Path = LabOption) -> None:
    """The allow-list: who may command this lab's daemons."""
    from controller.messaging.keys import fingerprint, key_dir

    config = _load(lab)
    table = Table(title=f"allowed client keys of {config.lab.name}")
    table.add_column("name")
    table.add_column("fingerprint")
    table.add_column("file")
    for path in sorted((key_dir(config.data_dir) / "allowed").glob("*.key")):
        table.add_row(path.stem, fingerprint(path), str(path))
    console.print(table)


def _store(lab: Path):
    from controller.data.params import ParameterStore

    config = _load(lab)
    return ParameterStore(config.data_dir / "params.sqlite")


@params_app.command("show")
def params_show(lab: Path = LabOption, node: str = NodeOption) -> None:
    """Current value of every parameter of a node, and where it came from."""
    import time as _time

    config = _load(lab)
    platform = config.nodes[node].platform if node in config.nodes else None
    with _store(lab) as store:
        snapshot = store.snapshot(node, platform or "nv")
    table = Table(title=f"parameters of node {node}")
    for column in ("name", "value", "unit", "source", "set"):
        table.add_column(column)
    for name, info in sorted(snapshot.items()):
        when = (
            _time.strftime("%Y-%m-%d %H:%M", _time.localtime(info["time"]))
            if "time" in info
            else "-"
        )
        table.add_row(name, f"{info['value']:.6g}", info["unit"], info["source"], when)
    console.print(table)


@params_app.command("history")
def params_history(name: str, lab: Path = LabOption, node: str = NodeOption) -> None:
    """Every value a parameter ever had, oldest first."""
    import time as _time

    with _store(lab) as store:
        rows = store.history(node, name)
    if not rows:
        raise _fail(f"no history for {node}.{name}")
    table = Table(title=f"history of {node}.{name}")
    for column in ("#", "time", "value", "unit", "source", "routine / reason", "accepted"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(row.time)),
            f"{row.value:.6g}",
            row.unit,
            row.source,
            row.routine or row.reason or "",
            "yes" if row.accepted else "no",
        )
    console.print(table)


@params_app.command("set")
def params_set(
    name: str,
    value: float,
    reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
    lab: Path = LabOption,
    node: str = NodeOption,
) -> None:
    """Manual override, recorded as such with its reason."""
    from controller.data.params import ParameterError, known_parameter

    if not known_parameter(name):
        err_console.print(f"[yellow]note:[/] '{name}' is not a parameter the sequences know")
    with _store(lab) as store:
        try:
            row = store.set_manual(node, name, value, reason)
        except ParameterError as e:
            raise _fail(str(e), 2) from None
    console.print(f"{node}.{name} = {row.value:g} {row.unit} (manual: {reason})")


@app.command("calibrate")
def calibrate(
    routines: list[str] = typer.Argument(None, help="Routines to run (with their dependencies)."),
    all_: bool = typer.Option(False, "--all", help="Walk the whole graph."),
    force: bool = typer.Option(False, "--force", help="Full calibration even if in spec."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the order; run nothing."),
    lab: Path = LabOption,
    node: str = NodeOption,
) -> None:
    """Calibrate a node: dependencies first, quick checks skip what is in spec, a failure stops
    what depends on it. Ends with a summary table; exit code 1 if anything failed."""
    from calibration.graph import GraphError, plan
    from calibration.routine import FAILED, IN_SPEC, SKIPPED, UPDATED

    names = [] if all_ or not routines else list(routines)
    if not all_ and not routines and not plan_only:
        raise _fail("name routines to run, or --all (see --plan for the graph)", 2)
    try:
        order = plan(names)
    except GraphError as e:
        raise _fail(str(e), 2) from None
    if plan_only:
        from calibration.graph import ROUTINES

        for k, name in enumerate(order, start=1):
            r = ROUTINES[name]
            deps = f" (after {', '.join(r.depends)})" if r.depends else ""
            console.print(f"{k}. {name}: {r.title}{deps} -> updates {', '.join(r.updates)}")
        return
    from calibration.graph import run_graph
    from controller.data.params import ParameterStore
    from controller.operator.calibration_access import (
        ClientNodeAccess,
        link_access,
        midpoint_access,
    )
    from controller.operator.client import NodeClient

    config = _load(lab)
    if node not in config.nodes or config.nodes[node].kind != "memory":
        raise _fail(f"{node!r} is not a memory node of {lab}", 2)
    try:
        client = NodeClient.for_lab(config, node, timeout_s=30)
    except (QnodeError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    with client, ParameterStore(config.data_dir / "params.sqlite") as store:
        midpoint = None
        if any(cfg.kind == "midpoint" for cfg in config.nodes.values()):
            try:
                resources = (
                    read_resource_map(config)
                    if any(i.simulated for _, _, i in config.all_instruments())
                    else None
                )
                midpoint = midpoint_access(config, store, resources, f"calibrate {node}")
                midpoint.open()
            except QnodeError as e:
                err_console.print(f"[yellow]midpoint not available:[/] {e}")
                midpoint = None
        link = link_access(config, node, store) if midpoint is not None else None
        access = ClientNodeAccess.for_lab(config, node, client, store, midpoint, link)
        with console.status(f"calibrating node {node}") as status:

            def progress(routine: str, what: str) -> None:
                status.update(f"[bold]{routine}[/]: {what}")
                if "out of spec" in what:
                    console.print(f"  {routine}: {what}")

            try:
                outcomes = run_graph(access, names, force=force, progress=progress)
            finally:
                if midpoint is not None:
                    midpoint.close()
    colours = {IN_SPEC: "green", UPDATED: "cyan", FAILED: "red", SKIPPED: "yellow"}
    table = Table(title=f"calibration of node {node}")
    for column in ("routine", "verdict", "old -> new", "fit quality", "reason", "plot"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        changes = "\n".join(
            f"{p}: {'-' if old is None else f'{old:.6g}'} -> {new:.6g}"
            for p, (old, new) in o.changes.items()
        )
        quality = "-" if o.quality is None else f"{o.quality:.3f}"
        table.add_row(
            o.routine,
            f"[{colours[o.verdict]}]{o.verdict}[/]",
            changes or "-",
            quality,
            o.reason,
            o.plot or "-",
        )
    console.print(table)
    if any(o.verdict == FAILED for o in outcomes):
        raise typer.Exit(1)


@app.command("soak")
def soak(
    minutes: float = typer.Option(..., "--minutes", min=0.1, help="How long to inject faults."),
    seed: int = typer.Option(1, "--seed", help="Seed of the simulated lab and of the faults."),
    lab: Path = LabOption,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the lab data, logs and report (default soak-output/...)."
    ),
    interval_s: float = typer.Option(
        6.0, "--interval", min=0.5, help="Mean seconds between faults."
    ),
    calibration: str = typer.Option(
        "truth",
        "--calibration",
        help="truth (take it from the simulator: the soak is about robustness) or routines.",
    ),
) -> None:
    """Entanglement on the simulated lab under random faults, audited against the simulator's
    ground truth: pairs delivered, lost, double-counted; faults injected and recovered."""
    from controller.harness.soak import render, write_report
    from controller.harness.soak import soak as run_soak

    config = _load(lab)
    if not all(inst.simulated for _, _, inst in config.all_instruments()):
        raise _fail(f"{lab}: the soak needs a fully simulated lab (it injects faults)", 2)
    if calibration not in ("truth", "routines"):
        raise _fail(f"--calibration {calibration!r}: truth or routines", 2)
    if out is None:
        out = Path("soak-output") / time.strftime(f"%Y%m%d-%H%M%S-seed{seed}")

    def stop(signum, frame):  # SIGTERM as Ctrl-C: the soak stops what it started
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        report = run_soak(config, minutes, seed, out, interval_s, calibration, console)
    except KeyboardInterrupt:
        raise _fail(f"soak stopped before its end (no report); its files: {out}", 130) from None
    except QnodeError as e:
        raise _fail(str(e)) from None
    render(report, console)
    console.print(f"report: {write_report(report, out / 'report.json')}")
    if not report.clean:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
