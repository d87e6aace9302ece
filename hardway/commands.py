"""What each task prints, one function per task, over a loaded Cluster.

The work is the library's (hardway.pipeline runs the stages in order); these functions print what it
returns and return an exit code (0: all good). A HardwayError raised here becomes a clear message in
the task class (hardway.tasklib).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import pipeline
from .output import console, err_console, progress
from .spec import Cluster


def run_plan(cluster: Cluster, out: Path) -> int:
    from .pki import ERROR
    from .pki.reconcile import plan_report
    from .pki.report import actions_table, summary_line
    pipeline.check_out(out, "pki", "bundles")
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
    from .bundle.report import plan_lines, plan_summary
    changes = plan_bundles(cluster, out)
    _print_lines(plan_lines(changes, out / "bundles"))
    console.print(plan_summary(changes))
    return 0


def run_pki(cluster: Cluster, out: Path, import_ca: list[str], new_secret: list[str] = (),
            retire_old_encryption: bool = False, rename_cluster: bool = False) -> int:
    from .pki import KEEP, parse_import
    from .pki.report import actions_table, summary_line
    pipeline.check_out(out, "pki")
    imports = [parse_import(arg) for arg in import_ca]
    result = pipeline.reconcile_pki(cluster, out, import_ca=imports, new_secrets=new_secret,
                                    retire_old_encryption=retire_old_encryption, rename_cluster=rename_cluster,
                                    progress=progress)
    if any(a.action != KEEP for a in result.actions):
        console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}"))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    console.print(f"pki: {summary_line(result.actions)} ({out / 'pki'})")
    return 0


def _print_pki_step(result, out: Path) -> None:
    """The PKI step of the rendering tasks: its notes, and a summary line when it changed something."""
    from .pki import KEEP
    from .pki.report import summary_line
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    if any(a.action != KEEP for a in result.actions):
        console.print(f"pki: {summary_line(result.actions)} ({out / 'pki'})")


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line)


def run_kubeconfigs(cluster: Cluster, out: Path) -> int:
    done = pipeline.kubeconfigs(cluster, out, progress=progress, on_pki=lambda r: _print_pki_step(r, out))
    target, written = done.directory, done.written
    for name in written[:20]:
        console.print(f"wrote {target / name}")
    if len(written) > 20:
        console.print(f"... and {len(written) - 20} more")
    for name in done.removed:
        console.print(f"removed {target / name} (no longer in the spec)")
    console.print(f"kubeconfigs: {len(written)} written, {len(done.unchanged)} unchanged, {len(done.removed)} removed ({target})")
    return 0


def run_units(cluster: Cluster, out: Path) -> int:
    trees = pipeline.units(cluster, out, progress=progress, on_pki=lambda r: _print_pki_step(r, out))
    plans = trees.plans
    shown = plans if len(plans) <= 30 else plans[:10] + plans[-1:]
    for p in shown:
        roles = ",".join(sorted(p.roles)) or "operator"
        console.print(f"{p.node:<20} {roles:<22} {p.notes.file_count:>3} files  {' '.join(p.units)}")
    if len(shown) < len(plans):
        console.print(f"... and {len(plans) - len(shown)} more nodes")
    console.print(f"units: {len(plans)} file trees in {trees.directory} (one per node, plus the workstation)")
    return 0


def run_bundle(cluster: Cluster, out: Path) -> int:
    from .bundle.report import run_lines
    run = pipeline.bundle(cluster, out, progress=progress, on_pki=lambda r: _print_pki_step(r, out))
    _print_lines(run_lines(run))
    return 0


def run_check(cluster: Cluster, out: Path, as_json: bool) -> int:
    from .pki import check_store
    from .pki.report import check_table
    pipeline.check_out(out, "pki", "bundles")
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
    from .pki import load_materials
    try:
        materials, error = load_materials(cluster, out / "pki"), None
    except HardwayError as e:
        materials, error = None, str(e)
    return check_bundles(cluster, out, materials, error, progress=progress)


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
    pipeline.check_out(out, "pki")
    result = renew(cluster, out / "pki", entry=entry, node=node, rotate_keys=rotate_keys, progress=progress)
    console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}", show_kept=True))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}")
    console.print(f"renew: {summary_line(result.actions, ('created', 'CAs reported', 'renewed'))}")
    return 0
