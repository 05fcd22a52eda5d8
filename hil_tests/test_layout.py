"""The layout holds: each folder of the controller is one part of the architecture, small
enough to read (docs/architecture.md); the import contracts (pyproject.toml) run in
`make test` through `lint-imports`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULES = 10


def test_no_folder_of_the_controller_is_a_long_flat_list():
    crowded = {}
    for folder in [ROOT / "controller", *sorted((ROOT / "controller").glob("*/"))]:
        if folder.name == "__pycache__":
            continue
        modules = [p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
        if len(modules) > MAX_MODULES:
            crowded[folder.name] = len(modules)
    assert not crowded, f"folders with more than {MAX_MODULES} modules: {crowded}"


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
