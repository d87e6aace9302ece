"""Fixtures every test file may use. Keep this small and generic: area-specific fixtures live in
their own test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

from helpers import REPO, missing


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def example_path() -> Callable[[str], Path]:
    """example_path("kthw") -> the checkout's examples/kthw.yaml."""
    def path(name: str) -> Path:
        p = REPO / "examples" / f"{name}.yaml"
        assert p.is_file(), f"no example {p}"
        return p
    return path


def _cli_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout importable, no bytecode written (so a
    run leaves the tree as it was), wide output (so messages are not wrapped)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", COLUMNS="200", NO_COLOR="1")
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """run_cli(args, cwd, tool="hardway"|"inv") runs the real command line in a subprocess.

    "hardway" is the console command's code (`python -m hardway.cli`); "inv" is Invoke reading the
    checkout's tasks.py (found from cwd upwards, or pass "--search-root" in args)."""
    def run(args: Sequence[str], cwd: Path, tool: str = "hardway", timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        program = {"hardway": [sys.executable, "-m", "hardway.cli"], "inv": [sys.executable, "-m", "invoke"]}[tool]
        return subprocess.run([*program, *args], cwd=cwd, env=_cli_env(extra_env), capture_output=True,
                              text=True, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def prerequisite() -> Callable[[str, str], None]:
    """prerequisite(what, command): a missing prerequisite skips the test, naming the command
    that provides it; under CI=true it fails instead, so CI cannot pass by skipping."""
    return lambda what, command: missing(f"{what} is missing", command)
