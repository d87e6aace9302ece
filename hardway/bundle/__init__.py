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

from typing import TYPE_CHECKING

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HardwayError
from ..plan import WORKSTATION
from ..progress import Progress, silent
from ..spec import Cluster
from . import layout
from ..fsutil import fsync_dir, read_record, record_beside, remove_written, write_record
from .archive import SUFFIX, ArchiveStatus, archived_nodes, locked, write_archive
from .check import BundleReport, BundleRow, check_bundle, check_bundles, plan_problems
from .diff import FileChange, NodeChange, plan_bundles, preview_materials
from .privilege import Checker

if TYPE_CHECKING:
    from ..pki.materials import Materials

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

    def count(self, status: ArchiveStatus) -> int:
        return sum(1 for _, s in self.results if s == status)


def write_bundles(cluster: Cluster, materials: Materials, out: Path, plans=None, *, progress: Progress = silent) -> BundleRun:
    """Write <out>/bundles/<node>.tar.gz for every node and the workstation; delete bundles of
    nodes no longer in the spec. Raises HardwayError (after writing the good ones) if a plan fails
    its checks; those bundles are left as they were."""
    if plans is None:
        from ..render import iter_node_plans
        plans = iter_node_plans(cluster, materials)
    bundles = out / "bundles"
    run = BundleRun(bundles)
    checker = Checker(cluster, materials)
    refused: list[str] = []
    with locked(bundles), progress("writing bundles", len(cluster.nodes) + 1) as advance:
        for plan in plans:
            problems = plan_problems(checker, plan)
            if problems:
                refused += [f"{plan.node}: {p}" for p in problems]
            else:
                status = write_archive(bundles / f"{plan.node}{SUFFIX}", layout.members(cluster, plan))
                run.results.append((plan.node, status))
            advance()
        if refused:
            raise HardwayError("refused to write bundles that would break least privilege or miss a file "
                               "(a rendering bug; those bundles were left as they were):\n  " + "\n  ".join(refused))
        wanted = {n.name for n in cluster.nodes} | {WORKSTATION}
        record = read_record(record_beside(bundles))
        stale = [f"{node}{SUFFIX}" for node in archived_nodes(bundles) if node not in wanted]
        removed, run.notes = remove_written(bundles, stale, record)
        run.removed += [name[: -len(SUFFIX)] for name in removed]
        if removed:
            fsync_dir(bundles)
        # what this run wrote or kept, and nothing else: an unwritten archive (refused) is not ours yet
        write_record(record_beside(bundles), {f"{node}{SUFFIX}" for node, _ in run.results})
    return run
