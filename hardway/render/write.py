"""Writing rendered output for review: <out>/kubeconfigs and <out>/nodes. The only disk access here.

Kubeconfigs are replaced one by one, atomically, and only when their bytes change. The node trees
are built beside the old ones and swapped in at the end, so a failed run leaves the previous tree
as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os
import secrets
import shutil
from pathlib import Path

from ..errors import HardwayError
from ..fsutil import atomic_write
from ..plan import NodeNotes, NodePlan
from ..progress import Progress, silent
from ..spec import Cluster
from .kubeconfigs import iter_kubeconfigs
from .nodes import iter_node_plans

if TYPE_CHECKING:
    from ..pki.materials import Materials

DIR_MODE = 0o700  # both trees hold private keys
KUBECONFIG_MODE = 0o600


def write_if_changed(path: Path, data: bytes, mode: int) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that; fix its mode."""
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o7777 != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode)
    return True


def _make_dir(path: Path, mode: int = DIR_MODE) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)


def write_kubeconfigs(cluster: Cluster, materials: Materials, directory: Path, *,
                      progress: Progress = silent) -> tuple[list[str], list[str], list[str]]:
    """Write every kubeconfig to `directory`; return (written, unchanged, removed) file names.

    A `.kubeconfig` file there that the cluster no longer has (a removed worker) is deleted."""
    # Render all first (a few KiB each): a rendering error then leaves every file as it was.
    rendered = list(iter_kubeconfigs(cluster, materials))
    try:
        _make_dir(directory)
    except OSError as e:
        raise HardwayError(f"cannot create {directory}: {e.strerror}") from None
    written, unchanged, wanted = [], [], set()
    with progress("writing kubeconfigs", len(rendered)) as advance:
        for name, data in rendered:
            wanted.add(name)
            (written if write_if_changed(directory / name, data, KUBECONFIG_MODE) else unchanged).append(name)
            advance(1)
    removed = sorted(p.name for p in directory.glob("*.kubeconfig") if p.name not in wanted)
    for name in removed:
        (directory / name).unlink()
    return written, unchanged, removed


def _write_plan(root: Path, plan: NodePlan) -> None:
    base = root / plan.node
    _make_dir(base, 0o755)
    for d in plan.directories:
        _make_dir(base / d.path.lstrip("/"), d.mode)
    for f in plan.files:
        target = base / f.path.lstrip("/")
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, f.data, f.mode, durable=False)  # a tree for review, swapped in whole


def write_node_trees(cluster: Cluster, materials: Materials, directory: Path, *,
                     progress: Progress = silent) -> list[NodePlan]:
    """Write each node's plan as <directory>/<node>/<path on the node>, replacing the old trees.

    Returns one summary per node (a NodePlan without files; notes.file_count is the file count), so
    the rendered bytes of 1000 nodes are never held at once."""
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HardwayError(f"cannot create {parent}: {e.strerror}") from None
    fresh = parent / f".{directory.name}.new-{secrets.token_hex(4)}"
    summaries = []
    try:
        _make_dir(fresh)
        with progress("rendering nodes", len(cluster.nodes) + 1) as advance:
            for plan in iter_node_plans(cluster, materials):
                _write_plan(fresh, plan)
                summaries.append(NodePlan(node=plan.node, roles=plan.roles, files=(), directories=plan.directories,
                                          units=plan.units, notes=NodeNotes(file_count=len(plan.files))))
                advance(1)
        old = parent / f".{directory.name}.old-{secrets.token_hex(4)}"
        if directory.exists():
            os.replace(directory, old)
        os.replace(fresh, directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return summaries
