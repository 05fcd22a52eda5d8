"""Names that become parts of paths in the data folder, and the paths built from them.

A sequence name, a run id, a session id or a station name ends up in a file name under
`data/runs/`. Each is checked against one strict pattern (letters, digits, `_`, `.`, `-`;
starting with a letter or digit; at most 64 characters; never `..`), with an error that
names the field; and every path built from them must resolve inside the data folder.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from qnode.errors import QnodeError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NAME = re.compile(NAME_PATTERN)


class BadName(QnodeError):
    pass


def check_name(field: str, value: object) -> str:
    """`value` if it is a safe path component, else BadName naming the field."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise BadName(
            f"{field} {value!r} is not allowed in a file name: use 1 to 64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit, and no '..'"
        )
    return value


def inside(data_dir: Path, path: Path) -> Path:
    """`path`, if it resolves inside the data folder; else BadName."""
    root = Path(data_dir).resolve()
    if not Path(path).resolve().is_relative_to(root):
        raise BadName(f"{path} is outside the data folder {root}")
    return Path(path)


def day_folder(data_dir: Path) -> Path:
    return Path(data_dir) / "runs" / time.strftime("%Y-%m-%d")


def run_path(data_dir: Path, run_id: str, node: str, sequence: str) -> Path:
    """`runs/YYYY-MM-DD/<run>_<node>_<sequence>.h5`, every part checked."""
    name = "_".join(
        (check_name("run id", run_id), check_name("node", node), check_name("sequence", sequence))
    )
    return inside(data_dir, day_folder(data_dir) / f"{name}.h5")


def session_path(data_dir: Path, session: str, station: str, kind: str = "entangle") -> Path:
    """`runs/YYYY-MM-DD/<session>_<station>_<kind>.h5` (kind: entangle for a node's file,
    heralds for the midpoint's), every part checked."""
    name = "_".join(
        (check_name("session id", session), check_name("node", station), check_name("kind", kind))
    )
    return inside(data_dir, day_folder(data_dir) / f"{name}.h5")
