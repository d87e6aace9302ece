"""The bundle stage: one deployable archive per node, and one for the operator's workstation.

    write_bundles(cluster, materials, out, plans=None, progress=silent) -> BundleRun   (writes <out>/bundles/)
    plan_bundles(cluster, out, actions=None, materials=None)  -> [NodeChange]   (writes nothing)
    check_bundles(cluster, out, materials=None, progress=silent) -> BundleReport   (reads <out>/bundles/)
    layout.members(cluster, plan) -> [Member]                         (one bundle, as values)
    privilege.Checker(cluster, materials).check(node, files)          (least privilege, by content)

Each node's plan is streamed from `hardway.render.iter_node_plans` into its archive and dropped:
memory stays flat however many nodes there are. A plan that fails least privilege or names a
path its bundle does not provide is never written. docs/bundles.md describes the bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HardwayError
from ..plan import WORKSTATION
from ..progress import Progress, silent
from ..spec import Cluster
from . import layout
from ..fsutil import atomic_write, fsync_dir, read_record, record_beside, remove_written, write_batch, write_record
from .archive import ARCHIVE_MODE, SUFFIX, ArchiveStatus, Assembler, archive_bytes, archived_nodes, locked
from .inputs import (Inputs, archive_digest, changed_components, read_regular, read_state, state_beside,
                     state_bytes, unchanged)

if TYPE_CHECKING:
    from ..pki.materials import Materials
    from .check import BundleReport, BundleRow, check_bundle, check_bundles  # noqa: F401
    from .diff import FileChange, NodeChange, plan_bundles, preview_materials  # noqa: F401
    from .privilege import Checker  # noqa: F401

# Imported on first use (PEP 562): a `bundle` with nothing to do needs none of them.
_LAZY = {"BundleReport": "check", "BundleRow": "check", "check_bundle": "check", "check_bundles": "check",
         "FileChange": "diff", "NodeChange": "diff", "plan_bundles": "diff", "preview_materials": "diff",
         "Checker": "privilege"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BundleReport", "BundleRow", "BundleRun", "Checker", "FileChange", "NodeChange", "check_bundle",
    "check_bundles", "layout", "plan_bundles", "preview_materials", "write_bundles",
]


@dataclass
class BundleRun:
    bundles: Path
    results: list[tuple[str, ArchiveStatus]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # bundles left alone (hardway did not write them)
    rendered: int = 0  # bundles rendered this run (the others' inputs and archives were unchanged)

    def count(self, status: ArchiveStatus) -> int:
        return sum(1 for _, s in self.results if s == status)


BATCH_BYTES = 8 << 20  # archives held before one write_batch (memory stays flat, syncs stay few)
PARALLEL_FROM = 64  # bundles to build before a second process pays for itself


class _Builder:
    """Plan -> checks -> archive bytes, for one process (a worker of the pool, or this one)."""

    def __init__(self, cluster: Cluster, materials: Materials, bundles: Path):
        from ..render.nodes import Planner
        from .privilege import Checker
        self.cluster = cluster
        self.bundles = bundles
        self.planner = Planner(cluster, materials)
        self.checker = Checker(cluster, materials)
        self.assembler = Assembler()

    def build(self, name: str, recorded: dict | None = None) -> tuple[str, list[str], bytes | None, int]:
        """(node, problems, archive, length of its first gzip member). `recorded`: the node's record
        when only the node table changed since it was made; the archive is then patched (patch.py) if
        it is still the recorded one, else rendered in full."""
        if recorded is not None:
            done = self._patch(name, recorded)
            if done is not None:
                return done
        return self.build_plan(self.planner.plan(name))

    def _split(self, node: str, members: list[layout.Member], shared_paths: set[str]):
        derived_names = {f"{node}/{layout.SUMS}", f"{node}/{layout.INSTALL_SH}"}
        shared_names = {f"{node}/{layout.member_name(node, p)}" for p in shared_paths}
        own = [m for m in members if m.name not in derived_names and m.name not in shared_names]
        derived = [m for m in members if m.name in derived_names]
        shared = [m for m in members if m.name in shared_names]
        return own, derived, shared

    def build_plan(self, plan) -> tuple[str, list[str], bytes | None, int]:
        from .check import plan_problems
        problems = plan_problems(self.checker, plan)
        if problems:
            return plan.node, problems, None, 0
        members = layout.members(self.cluster, plan)
        own, derived, shared = self._split(plan.node, members, {f.path for f in plan.files if f.shared})
        assembled = self.assembler.assemble(own, derived, shared)
        if assembled is None:  # a name that does not fit ustar: one pax tar, never patched
            return plan.node, [], archive_bytes(members), 0
        return (plan.node, [], *assembled)

    def _patch(self, name: str, recorded: dict):
        from .patch import patched
        old = read_regular(self.bundles / f"{name}{SUFFIX}")
        if old is None or (len(old), hashlib.sha256(old).hexdigest()) != (recorded["size"], recorded["sha256"]):
            return None
        files = self.planner.shared_files(name)
        problems = [f"{f.path}: {f.problem}" for f in self.checker.check(name, files)]
        if problems:
            return name, problems, None, 0
        shared = sorted((layout.Member(f"{name}/{layout.member_name(name, f.path)}", f.mode, f.data) for f in files),
                        key=lambda m: m.name.split("/"))
        derived_names = sorted([f"{name}/{layout.SUMS}", f"{name}/{layout.INSTALL_SH}"], key=lambda n: n.split("/"))
        data = patched(old, recorded.get("head", 0), name, derived_names, shared, self.assembler)
        return None if data is None else (name, [], data, recorded["head"])


_JOB: tuple | None = None  # (cluster, materials), inherited by the pool's forked workers
_BUILDER: _Builder | None = None


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: a worker dies with hardway (PR_SET_PDEATHSIG), so a killed run
    leaves no worker holding the bundles lock or the caller's stderr."""
    import signal
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # hardway died before the line above
        os._exit(1)


def _build_in_worker(item: tuple[str, dict | None]):
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = _Builder(*_JOB)
    return _BUILDER.build(*item)


def _workers(count: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus, 8) if count >= PARALLEL_FROM else 1


@contextmanager
def _builds(cluster: Cluster, materials: Materials, bundles: Path, todo: list[tuple[str, dict | None]],
            plans) -> Iterator[Iterator[tuple]]:
    """(node, problems, archive bytes, head) for each (name, record of the archive to patch or None), or for
    each given plan, in order. Independent bundles are built by forked worker processes when there
    are enough of them and more than one CPU; each worker renders and compresses, this process only
    writes (results stream back in order, a few at a time: memory stays flat)."""
    global _JOB
    if plans is not None:
        builder = _Builder(cluster, materials, bundles)
        yield (builder.build_plan(p) for p in plans)
        return
    if not todo:  # nothing to build: nothing to import or start either
        yield iter(())
        return
    workers = _workers(len(todo))
    if workers == 1:
        builder = _Builder(cluster, materials, bundles)
        yield (builder.build(*item) for item in todo)
        return
    import multiprocessing
    _JOB = (cluster, materials, bundles)
    try:
        # fork: the workers inherit the cluster and the materials (nothing pickled but names and
        # archives), and start before any progress thread exists
        with multiprocessing.get_context("fork").Pool(workers, initializer=_die_with_parent,
                                                      initargs=(os.getpid(),)) as pool:
            yield pool.imap(_build_in_worker, todo, chunksize=8)
    finally:
        _JOB = None


def write_bundles(cluster: Cluster, materials: Materials, out: Path, plans=None, *, progress: Progress = silent) -> BundleRun:
    """Write <out>/bundles/<node>.tar.gz for every node and the workstation; delete bundles of
    nodes no longer in the spec. Raises HardwayError (after writing the good ones) if a plan fails
    its checks; those bundles are left as they were.

    A bundle whose inputs (inputs.Inputs: source, spec values, node table, store entries) are the
    ones recorded for it, and whose archive on disk is the recorded one (size and SHA-256), is
    neither rendered nor compressed. The others are written in batches: temp files, one syncfs,
    renames, one syncfs (fsutil.write_batch), so each archive is old or new whatever happens."""
    bundles = out / "bundles"
    run = BundleRun(bundles)
    names = [n.name for n in cluster.nodes] + [WORKSTATION]
    refused: list[str] = []
    with locked(bundles):
        state = read_state(bundles)
        inputs = Inputs(cluster, materials)
        wanted_inputs = {name: inputs.of(name) for name in names}
        records: dict[str, dict] = {}
        todo: list[tuple[str, dict | None]] = []
        if plans is None:
            for name in names:
                rec = state.get(name)
                if unchanged(rec, wanted_inputs[name], bundles / f"{name}{SUFFIX}"):
                    records[name] = rec
                elif name != WORKSTATION and changed_components(rec, wanted_inputs[name]) == ["table"]:
                    todo.append((name, rec))  # patched if still that archive
                else:
                    todo.append((name, None))
        statuses: dict[str, ArchiveStatus] = {}
        batch: list[tuple[Path, bytes, int]] = []
        held = 0
        with _builds(cluster, materials, bundles, todo, plans) as built, \
                progress("writing bundles", len(todo) if plans is None else len(names)) as advance:
            for node, problems, data, head in built:
                run.rendered += 1
                advance()
                if problems:
                    refused += [f"{node}: {p}" for p in problems]
                    continue
                path = bundles / f"{node}{SUFFIX}"
                digest = hashlib.sha256(data).hexdigest()
                if archive_digest(path) == (len(data), digest):
                    statuses[node] = ArchiveStatus.UNCHANGED  # the same bytes: the file keeps its mtime
                else:
                    statuses[node] = ArchiveStatus.UPDATED if os.path.lexists(path) else ArchiveStatus.CREATED
                    batch.append((path, data, ARCHIVE_MODE))
                    held += len(data)
                if node in wanted_inputs:
                    records[node] = {"inputs": wanted_inputs[node], "size": len(data), "sha256": digest, "head": head}
                if held >= BATCH_BYTES:
                    write_batch(bundles, batch)
                    batch, held = [], 0
            if batch:
                write_batch(bundles, batch)
        run.results = [(name, statuses.get(name, ArchiveStatus.UNCHANGED)) for name in names
                       if name in statuses or name in records]
        run.results += [(n, s) for n, s in statuses.items() if n not in wanted_inputs]
        if refused:
            _save_state(bundles, records)
            raise HardwayError("refused to write bundles that would break least privilege or miss a file "
                               "(a rendering bug; those bundles were left as they were):\n  " + "\n  ".join(refused))
        wanted = {n.name for n in cluster.nodes} | {WORKSTATION}
        record = read_record(record_beside(bundles))
        stale = [f"{node}{SUFFIX}" for node in archived_nodes(bundles) if node not in wanted]
        removed, run.notes = remove_written(bundles, stale, record)
        run.removed += [name[: -len(SUFFIX)] for name in removed]
        if removed:
            fsync_dir(bundles)
        _save_state(bundles, records)
        # what this run wrote or kept, and nothing else: an unwritten archive (refused) is not ours yet
        write_record(record_beside(bundles), {f"{node}{SUFFIX}" for node, _ in run.results})
    return run


def _save_state(bundles: Path, records: dict[str, dict]) -> None:
    """Written after the archives it describes are durable: a run killed before this leaves the old
    state, which then matches no new archive (their digests differ), so nothing is wrongly skipped."""
    data = state_bytes(records)
    path = state_beside(bundles)
    try:
        if not path.is_symlink() and path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write(path, data, 0o600)
