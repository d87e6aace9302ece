"""What each task does, one function per task, over a loaded Cluster.

Each returns an exit code (0: all good) and prints its own report; a HardwayError raised here
becomes a clear message. Stages not built yet say so.
"""

from __future__ import annotations

from pathlib import Path

from .errors import NotBuiltYet
from .spec import Cluster


def run_plan(cluster: Cluster, out: Path) -> int:
    raise NotBuiltYet("`plan` needs the PKI and bundle stages, which are not built yet")


def run_pki(cluster: Cluster, out: Path, import_ca: list[str]) -> int:
    raise NotBuiltYet("`pki` is not built yet")


def run_kubeconfigs(cluster: Cluster, out: Path) -> int:
    raise NotBuiltYet("`kubeconfigs` is not built yet")


def run_units(cluster: Cluster, out: Path) -> int:
    raise NotBuiltYet("`units` is not built yet")


def run_bundle(cluster: Cluster, out: Path) -> int:
    raise NotBuiltYet("`bundle` is not built yet")


def run_check(cluster: Cluster, out: Path, as_json: bool) -> int:
    raise NotBuiltYet("`check` is not built yet")


def run_renew(cluster: Cluster, out: Path, entry: str | None, node: str | None, rotate_keys: bool) -> int:
    raise NotBuiltYet("`renew` is not built yet")
