"""`qnode sim`: the simulated lab (through controller.harness.sim, imported when used)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from controller.cli.app import LabOption, ResourceMapOption, console, fail, load_config

app = typer.Typer(help="The simulated lab.", no_args_is_help=True)


@app.command("up")
def sim_up(
    lab: Path = LabOption,
    seed: int = typer.Option(1, "--seed", help="Seed of the hidden true parameters."),
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Serve every simulated instrument of the lab in the foreground, until Ctrl-C/SIGTERM."""
    from controller.harness.sim import serve

    config = load_config(lab)
    map_path = resource_map or config.resource_map_path
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def ready(info: dict) -> None:
        table = Table(title=f"simulated lab '{config.lab.name}' (seed {seed}): Ctrl-C stops it")
        table.add_column("instrument")
        table.add_column("resource")
        for name, resource in info["resources"].items():
            table.add_row(name, resource)
        console.print(table)
        console.print(f"resource map: {map_path}")
        sys.stdout.flush()

    serve(config, seed, map_path, ready)


@app.command("fault")
def sim_fault(
    instrument: str = typer.Argument(..., help="e.g. A.mw"),
    fault: str = typer.Argument(
        ..., help="freeze, unfreeze, garble, drop, reset, delay, unplug, plug, clear"
    ),
    seconds: float = typer.Option(0.0, help="Reply delay, for 'delay' (finite, not negative)."),
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """Inject a fault into a running simulated lab."""
    from controller.harness.sim import SimControl, SimControlError

    if not math.isfinite(seconds) or seconds < 0:
        raise fail(f"--seconds must be finite and not negative, got {seconds:g}", 2)
    config = load_config(lab)
    try:
        control = SimControl(resource_map or config.resource_map_path)
        control.fault(instrument, fault, seconds=seconds)
    except (SimControlError, OSError, KeyError) as e:
        raise fail(str(e)) from None
    console.print(f"{fault} -> {instrument}")


@app.command("state")
def sim_state(
    instrument: str = typer.Argument(..., help="e.g. A.seq, A.mw, B.laser_red"),
    as_json: bool = typer.Option(False, "--json", help="The state as JSON, for scripts."),
    lab: Path = LabOption,
    resource_map: Path | None = ResourceMapOption,
) -> None:
    """What a simulated instrument shows now: outputs, lines, levels (the control channel's
    `state`)."""
    from controller.harness.sim import SimControl, SimControlError

    config = load_config(lab)
    map_path = resource_map or config.resource_map_path
    if not map_path.exists():
        raise fail(
            f"no simulated lab running for '{config.lab.name}' (no resource map at {map_path}): "
            "start it with `qnode sim up`",
            2,
        )
    try:
        control = SimControl(map_path, timeout_s=3.0)
        if instrument not in control.resources:
            known = ", ".join(sorted(control.resources))
            raise fail(f"no simulated instrument {instrument!r} (known: {known})", 2)
        state = control.state(instrument)
    except (SimControlError, OSError, KeyError, ValueError) as e:
        raise fail(f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)) from None
    if as_json:
        typer.echo(json.dumps(_plain(state), indent=2, sort_keys=True))
        return
    table = Table(title=f"{instrument} (simulated)")
    table.add_column("what")
    table.add_column("value")
    node = config.nodes.get(instrument.partition(".")[0])
    line_names = {line: name for name, line in node.channels.ttl.items()} if node else {}
    for key, value in _rows(state, line_names):
        table.add_row(key, value)
    console.print(table)


def _plain(value: Any) -> Any:
    """The state as JSON can hold it (bytes as hex, tuples as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _rows(state: dict, line_names: dict[int, str], prefix: str = "") -> list[tuple[str, str]]:
    """One row per value (nested maps flattened as a.b); TTL masks in hex with their lines
    (named as the lab file's channel map names them)."""
    rows: list[tuple[str, str]] = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _rows(value, line_names, f"{name}.")
        elif isinstance(value, int) and not isinstance(value, bool) and "ttl" in str(key):
            lines = [line_names.get(k, str(k)) for k in range(32) if value >> k & 1]
            rows.append((name, f"{value:#x} (lines high: {', '.join(lines) or 'none'})"))
        elif isinstance(value, bool):
            rows.append((name, "on" if value else "off"))
        elif isinstance(value, (list, tuple)) and len(value) > 8:
            rows.append((name, f"{len(value)} items: {json.dumps(_plain(value[:3]))[:-1]}, ...]"))
        else:
            rows.append((name, json.dumps(_plain(value)) if not isinstance(value, str) else value))
    return rows
