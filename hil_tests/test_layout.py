"""The layout holds: each folder of the controller is one part of the architecture, small
enough to read (docs/architecture.md); the import contracts (pyproject.toml) run in
`make test` through `lint-imports`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULES = 10


def modules_of(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}


def test_no_folder_of_the_controller_is_a_long_flat_list():
    """Each folder is one part of the architecture with at most ten modules; the CLI's
    folder holds one module per command group (what `qnode --help` lists) and its app."""
    crowded = {}
    for folder in [ROOT / "controller", *sorted((ROOT / "controller").glob("*/"))]:
        if folder.name in ("__pycache__", "cli"):
            continue
        if len(modules_of(folder)) > MAX_MODULES:
            crowded[folder.name] = len(modules_of(folder))
    assert not crowded, f"folders with more than {MAX_MODULES} modules: {crowded}"


def test_the_cli_has_one_module_per_command_group():
    from controller.cli import app

    groups = {g.name for g in app.registered_groups}
    commands = {c.callback.__module__.rsplit(".", 1)[-1] for c in app.registered_commands}
    assert modules_of(ROOT / "controller" / "cli") == groups | commands | {"app"}


def test_every_folder_of_code_is_a_package():
    """A folder without __init__.py is skipped by the install and by the import contracts."""
    missing = [
        str(folder.relative_to(ROOT))
        for top in ("qnode", "sequences", "drivers", "calibration", "controller", "sim_backends")
        for folder in [ROOT / top, *(ROOT / top).rglob("*/")]
        if folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert not missing, f"folders of modules without __init__.py: {missing}"
