"""The stages in their order, without a word printed: PKI first, then render, then bundle.

`kubeconfigs`, `units` and `bundle` (the tasks) and `hardway lab.up` all run the same steps: check
the output directories, reconcile the PKI store, then render from its materials. They call this
module and print what it returns; `on_pki` lets a caller report the PKI step as soon as it is done,
before the (longer) rendering starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import check_directory_path
from .plan import NodePlan
from .progress import Progress, silent
from .spec import Cluster

PKI, BUNDLES, KUBECONFIGS, NODES = "pki", "bundles", "kubeconfigs", "nodes"  # what the stages write under <out>


def _ignore(result) -> None:
    pass


OnPki = Callable[..., None]  # called with the pki ReconcileResult


def check_out(out: Path, *children: str) -> None:
    """Before anything is written: `out` and the directories of it a task uses are (or can be) directories."""
    check_directory_path(out, "the output directory")
    for child in children:
        check_directory_path(out / child, f"the {child} directory", f"move {out / child} away, or choose another --out")


def reconcile_pki(cluster: Cluster, out: Path, *, import_ca: Iterable = (), new_secrets: Iterable[str] = (),
                  retire_old_encryption: bool = False, rename_cluster: bool = False, progress: Progress = silent):
    """Create or reconcile <out>/pki; the pki ReconcileResult (actions, materials, notes)."""
    from .pki import reconcile
    check_out(out, PKI)
    return reconcile(cluster, out / PKI, import_ca=list(import_ca), new_secrets=list(new_secrets),
                     retire_old_encryption=retire_old_encryption, rename_cluster=rename_cluster, progress=progress)


def _materials(cluster: Cluster, out: Path, progress: Progress, on_pki: OnPki):
    result = reconcile_pki(cluster, out, progress=progress)
    on_pki(result)
    return result.materials


@dataclass(frozen=True)
class KubeconfigsWritten:
    directory: Path
    written: list[str]
    unchanged: list[str]
    removed: list[str]
    notes: list[str] = field(default_factory=list)  # files left alone, linked directories


def kubeconfigs(cluster: Cluster, out: Path, *, progress: Progress = silent,
                on_pki: OnPki = _ignore) -> KubeconfigsWritten:
    """The PKI, then one kubeconfig per identity in <out>/kubeconfigs."""
    from .render.write import write_kubeconfigs
    check_out(out, KUBECONFIGS)
    materials = _materials(cluster, out, progress, on_pki)
    target, notes = out / KUBECONFIGS, []
    return KubeconfigsWritten(target, *write_kubeconfigs(cluster, materials, target, progress=progress, notes=notes),
                              notes=notes)


@dataclass(frozen=True)
class NodeTrees:
    directory: Path
    plans: list[NodePlan]  # one summary per node, without files (notes hold the file count)
    notes: list[str] = field(default_factory=list)  # files left alone, linked directories


def units(cluster: Cluster, out: Path, *, progress: Progress = silent, on_pki: OnPki = _ignore) -> NodeTrees:
    """The PKI, then every node's file tree in <out>/nodes/<node>/ for review."""
    from .render.write import write_node_trees
    check_out(out, NODES)
    materials = _materials(cluster, out, progress, on_pki)
    target, notes = out / NODES, []
    return NodeTrees(target, write_node_trees(cluster, materials, target, progress=progress, notes=notes), notes)


def bundle(cluster: Cluster, out: Path, *, progress: Progress = silent, on_pki: OnPki = _ignore):
    """The PKI, then one bundle per node in <out>/bundles; the bundle.BundleRun."""
    from .bundle import write_bundles
    check_out(out, BUNDLES)
    materials = _materials(cluster, out, progress, on_pki)
    return write_bundles(cluster, materials, out, progress=progress)
