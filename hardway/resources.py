"""Where the data directories live: beside the package in a checkout, inside it in a wheel."""

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """The `pki`, `units` or `examples` directory."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"hardway is installed without its {name}/ directory")


def example_names() -> list[str]:
    return sorted(p.stem for p in data_dir("examples").glob("*.yaml"))


def example_path(name: str) -> Path:
    return data_dir("examples") / f"{name}.yaml"
