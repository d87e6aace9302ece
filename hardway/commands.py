"""What each task does, one function per task, over a loaded Cluster.

Each returns an exit code (0: all good) and prints its own report; a HardwayError raised here
becomes a clear message. Stages not built yet say so.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import output
from .errors import check_directory_path
from .output import console, err_console
from .spec import Cluster


def _check_out(out: Path, *children: str) -> None:
    """Before anything is written: `out` and the directories of it a task uses are (or can be) directories."""
    check_directory_path(out, "the output directory")
    for child in children:
        check_directory_path(out / child, f"the {child} directory", f"move {out / child} away, or choose another --out")


def run_plan(cluster: Cluster, out: Path) -> int:
    from .pki import ERROR
    from .pki.reconcile import plan_report
    from .pki.report import actions_table, summary_line
    _check_out(out, "pki", "bundles")
    report = plan_report(cluster, out / "pki")
    actions = report.actions
    console.print(actions_table(actions, title=f"PKI store {out / 'pki'}"))
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    console.print(f"pki: {summary_line(actions, ('to create', 'to keep', 'to re-issue'))}")
    if any(a.action == ERROR for a in actions):
        console.print("bundles: not planned until the PKI store's errors above are fixed")
        return 1
    from .bundle import plan_bundles
    from .bundle.report import plan_summary, print_plan
    changes = plan_bundles(cluster, out)
    print_plan(changes, out / "bundles")
    console.print(plan_summary(changes))
    return 0


def run_pki(cluster: Cluster, out: Path, import_ca: list[str], new_secret: list[str] = (),
            retire_old_encryption: bool = False) -> int:
    from .pki import KEEP, parse_import, reconcile
    from .pki.report import actions_table, summary_line
    _check_out(out, "pki")
    imports = [parse_import(arg) for arg in import_ca]
    result = reconcile(cluster, out / "pki", import_ca=imports, new_secrets=new_secret,
                       retire_old_encryption=retire_old_encryption, progress=output.progress)
    if any(a.action != KEEP for a in result.actions):
        console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}"))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    console.print(f"pki: {summary_line(result.actions)} ({out / 'pki'})")
    return 0


def _reconciled_materials(cluster: Cluster, out: Path):
    """Reconcile the PKI store (as `pki` does) and return its materials, for the rendering tasks."""
    from .pki import KEEP, reconcile
    from .pki.report import summary_line
    _check_out(out, "pki")
    result = reconcile(cluster, out / "pki", progress=output.progress)
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    if any(a.action != KEEP for a in result.actions):
        console.print(f"pki: {summary_line(result.actions)} ({out / 'pki'})")
    return result.materials


def run_kubeconfigs(cluster: Cluster, out: Path) -> int:
    from .output import progress
    from .render.kubeconfigs import count
    from .render.write import write_kubeconfigs
    _check_out(out, "kubeconfigs")
    materials = _reconciled_materials(cluster, out)
    target = out / "kubeconfigs"
    with progress("writing kubeconfigs", count(cluster)) as advance:
        written, unchanged, removed = write_kubeconfigs(cluster, materials, target, advance)
    for name in written[:20]:
        console.print(f"wrote {target / name}")
    if len(written) > 20:
        console.print(f"... and {len(written) - 20} more")
    for name in removed:
        console.print(f"removed {target / name} (no longer in the spec)")
    console.print(f"kubeconfigs: {len(written)} written, {len(unchanged)} unchanged, {len(removed)} removed ({target})")
    return 0


def run_units(cluster: Cluster, out: Path) -> int:
    from .output import progress
    from .render.write import write_node_trees
    _check_out(out, "nodes")
    materials = _reconciled_materials(cluster, out)
    target = out / "nodes"
    with progress("rendering nodes", len(cluster.nodes) + 1) as advance:
        plans = write_node_trees(cluster, materials, target, advance)
    shown = plans if len(plans) <= 30 else plans[:10] + plans[-1:]
    for p in shown:
        roles = ",".join(sorted(p.roles)) or "operator"
        console.print(f"{p.node:<20} {roles:<22} {p.notes['files']:>3} files  {' '.join(p.units)}")
    if len(shown) < len(plans):
        console.print(f"... and {len(plans) - len(shown)} more nodes")
    console.print(f"units: {len(plans)} file trees in {target} (one per node, plus the workstation)")
    return 0


def run_bundle(cluster: Cluster, out: Path) -> int:
    from .bundle import write_bundles
    from .bundle.report import print_run
    _check_out(out, "bundles")
    materials = _reconciled_materials(cluster, out)
    print_run(write_bundles(cluster, materials, out))
    return 0


def run_check(cluster: Cluster, out: Path, as_json: bool) -> int:
    from .pki import check_store
    from .pki.report import check_table
    _check_out(out, "pki", "bundles")
    report = check_store(cluster, out / "pki")
    bundles = _check_bundles(cluster, out)
    if as_json:
        print(json.dumps({"ok": report.ok and bundles.ok, "pki": report.to_dict(), "bundles": bundles.to_dict()},
                         indent=2))
    else:
        console.print(check_table(report))
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        for p in report.problems:
            console.print(f"[bold red]problem:[/] {p}")
        console.print(f"pki: {'ok' if report.ok else f'{len(report.problems)} problem(s)'}, "
                      f"{len(report.warnings)} warning(s), {len(report.rows)} certificates")
        _print_bundle_check(bundles)
    return 0 if report.ok and bundles.ok else 1


def _check_bundles(cluster: Cluster, out: Path):
    """The bundles part of `check`: checksums, manifests, least privilege, references."""
    from .bundle import check_bundles
    from .errors import HardwayError
    from .output import progress
    from .pki import load_materials
    try:
        materials, error = load_materials(cluster, out / "pki"), None
    except HardwayError as e:
        materials, error = None, str(e)
    with progress("checking bundles", len(cluster.nodes) + 1) as advance:
        return check_bundles(cluster, out, materials, error, advance)


def _print_bundle_check(bundles) -> None:
    from .bundle.report import check_summary, check_table as bundle_table
    if bundles.rows:
        console.print(bundle_table(bundles))
    for note in bundles.notes:
        console.print(f"[dim]note:[/] {note}")
    for p in bundles.all_problems():
        console.print(f"[bold red]problem:[/] {p}")
    console.print(check_summary(bundles))


def run_renew(cluster: Cluster, out: Path, entry: str | None, node: str | None, rotate_keys: bool) -> int:
    from .pki import renew
    from .pki.report import actions_table, summary_line
    _check_out(out, "pki")
    result = renew(cluster, out / "pki", entry=entry, node=node, rotate_keys=rotate_keys, progress=output.progress)
    console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}", show_kept=True))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    console.print(f"renew: {summary_line(result.actions, ('created', 'CAs reported', 'renewed'))}")
    return 0
