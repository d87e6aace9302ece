"""Where the data directories live: inside the package in a wheel, beside it in a checkout."""

from functools import cache
from pathlib import Path

from .errors import HardwayError

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """The `pki`, `units` or `examples` directory."""
    candidates = [_PACKAGE / "_data" / name]
    # Beside the package only in a checkout: an installed package's parent is site-packages, where
    # another distribution's stray top-level `examples/` must not be mistaken for ours.
    if (_PACKAGE.parent / "pyproject.toml").is_file():
        candidates.append(_PACKAGE.parent / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise HardwayError(f"hardway is installed without its {name}/ directory (looked in "
                       f"{', '.join(str(c) for c in candidates)}); reinstall it")


def example_names() -> list[str]:
    return sorted(p.stem for p in data_dir("examples").glob("*.yaml"))


def example_path(name: str) -> Path:
    return data_dir("examples") / f"{name}.yaml"
