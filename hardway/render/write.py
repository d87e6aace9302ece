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
from ..fsutil import (RECORD, atomic_write, clean_generated, chmod_nofollow, linked_dir_note, read_record, record_beside,
                      remove_written, write_record)
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
    """Atomically replace `path` with `data` unless it already holds exactly that; fix its mode.
    A link at `path` is replaced, never read, written or chmodded through."""
    try:
        if not path.is_symlink() and path.read_bytes() == data:
            if path.stat().st_mode & 0o7777 != mode:
                chmod_nofollow(path, mode)
            return False
    except (FileNotFoundError, IsADirectoryError):
        pass
    atomic_write(path, data, mode)
    return True


def _make_dir(path: Path, mode: int = DIR_MODE, notes: list[str] | None = None) -> None:
    """Create `path` at `mode`. A directory the operator linked is followed and tightened, with a
    note; a link to anything else is refused (never chmodded through)."""
    path.mkdir(parents=True, exist_ok=True)
    note = linked_dir_note(path, mode)
    if note and notes is not None:
        notes.append(note)
    if not path.is_symlink() and not chmod_nofollow(path, mode):
        raise HardwayError(f"{path} is not a directory; hardway writes there: move it away")


def write_kubeconfigs(cluster: Cluster, materials: Materials, directory: Path, *, progress: Progress = silent,
                      notes: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Write every kubeconfig to `directory`; return (written, unchanged, removed) file names.

    A `.kubeconfig` file there that the cluster no longer has (a removed worker) is deleted if
    hardway wrote it (its record, fsutil.RECORD); anything else is left alone with a note."""
    notes = [] if notes is None else notes
    # Render all first (a few KiB each): a rendering error then leaves every file as it was.
    rendered = list(iter_kubeconfigs(cluster, materials))
    try:
        _make_dir(directory, notes=notes)
    except OSError as e:
        raise HardwayError(f"cannot create {directory}: {e.strerror}") from None
    record = read_record(record_beside(directory))
    written, unchanged, wanted = [], [], set()
    with progress("writing kubeconfigs", len(rendered)) as advance:
        for name, data in rendered:
            wanted.add(name)
            (written if write_if_changed(directory / name, data, KUBECONFIG_MODE) else unchanged).append(name)
            advance(1)
    stale = [p.name for p in directory.glob("*.kubeconfig") if p.name not in wanted]
    removed, left = remove_written(directory, stale, record)
    notes += left
    write_record(record_beside(directory), wanted)
    return written, unchanged, removed


def _write_plan(root: Path, plan: NodePlan, notes: list[str]) -> set[str]:
    """Write one node's files under `root`; the names written, relative to `root`."""
    base = root / plan.node
    _make_dir(base, 0o755, notes)
    for d in plan.directories:
        _make_dir(base / d.path.lstrip("/"), d.mode, notes)
    names = set()
    for f in plan.files:
        target = base / f.path.lstrip("/")
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, f.data, f.mode, durable=False)  # a tree for review, swapped in whole
        names.add(f"{plan.node}/{f.path.lstrip('/')}")
    return names


def _render_trees(cluster: Cluster, materials: Materials, root: Path, progress: Progress,
                  notes: list[str]) -> tuple[list[NodePlan], set[str]]:
    summaries, names = [], set()
    with progress("rendering nodes", len(cluster.nodes) + 1) as advance:
        for plan in iter_node_plans(cluster, materials):
            names |= _write_plan(root, plan, notes)
            summaries.append(NodePlan(node=plan.node, roles=plan.roles, files=(), directories=plan.directories,
                                      units=plan.units, notes=NodeNotes(file_count=len(plan.files))))
            advance(1)
    return summaries, names


def write_node_trees(cluster: Cluster, materials: Materials, directory: Path, *,
                     progress: Progress = silent, notes: list[str] | None = None) -> list[NodePlan]:
    """Write each node's plan as <directory>/<node>/<path on the node>, replacing the old trees.

    Returns one summary per node (a NodePlan without files; notes.file_count is the file count), so
    the rendered bytes of 1000 nodes are never held at once. Only files hardway wrote (its record,
    fsutil.RECORD) are ever deleted; a `directory` the operator linked is written in place."""
    notes = [] if notes is None else notes
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HardwayError(f"cannot create {parent}: {e.strerror}") from None
    if directory.is_symlink():
        return _write_trees_in_place(cluster, materials, directory, progress, notes)
    fresh = parent / f".{directory.name}.new-{secrets.token_hex(4)}"
    try:
        _make_dir(fresh)
        summaries, names = _render_trees(cluster, materials, fresh, progress, notes)
        write_record(fresh / RECORD, names, durable=False)
        old = parent / f".{directory.name}.old-{secrets.token_hex(4)}"
        if directory.exists():
            os.replace(directory, old)
        os.replace(fresh, directory)
        _remove_old_tree(old, directory, notes)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return summaries


def _write_trees_in_place(cluster: Cluster, materials: Materials, directory: Path, progress: Progress,
                          notes: list[str]) -> list[NodePlan]:
    if not directory.is_dir():
        raise HardwayError(f"{directory} is a link to {directory.resolve()}, not a directory: remove the link "
                           "or point it at a directory")
    _make_dir(directory, notes=notes)
    record = read_record(directory / RECORD)
    summaries, names = _render_trees(cluster, materials, directory, progress, notes)
    _, left = remove_written(directory, record - names - {RECORD}, record)
    notes += left
    write_record(directory / RECORD, names)
    return summaries


def _remove_old_tree(old: Path, new: Path, notes: list[str]) -> None:
    """Delete the files of the previous tree that hardway wrote; anything else stays, with a note."""
    if not old.exists():
        return
    foreign = clean_generated(old)
    if foreign:
        notes.append(f"left alone: {old} holds {len(foreign)} file(s) hardway did not write "
                     f"({', '.join(sorted(foreign)[:5])}{', ...' if len(foreign) > 5 else ''}); the new trees are "
                     f"in {new}")
