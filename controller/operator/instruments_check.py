"""`qnode instruments check`: open every instrument of a lab and report its health."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.table import Table

from controller.labconfig import LabConfig
from qnode.errors import QnodeError


@dataclass(frozen=True)
class CheckRow:
    name: str
    role: str
    resource: str
    identity: str
    state: str
    error: str

    @property
    def healthy(self) -> bool:
        return not self.error


def check_instrument(
    lab: LabConfig, node: str, name: str, resources: dict[str, str] | None
) -> CheckRow:
    inst = lab.instrument(node, name)
    full = f"{node}.{name}"
    resource = inst.resource
    try:
        driver = lab.make_driver(node, name, resources)
        resource = driver.resource
        with driver:
            health = driver.health()
        return CheckRow(
            full, inst.role, resource, health.identity, health.state, "; ".join(health.errors)
        )
    except (QnodeError, OSError, ValueError) as e:
        return CheckRow(
            full, inst.role, resource, "", "unreachable" if "connect" in str(e) else "error", str(e)
        )


def check_lab(lab: LabConfig, resources: dict[str, str] | None) -> list[CheckRow]:
    targets = [(node, name) for node, name, _ in lab.all_instruments()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda t: check_instrument(lab, t[0], t[1], resources), targets))


def render_table(rows: list[CheckRow], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "role", "resource", "identity", "state", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = None if row.healthy else "red"
        cells = (row.name, row.role, row.resource, row.identity, row.state, row.error or "-")
        table.add_row(*cells, style=style)
    return table
