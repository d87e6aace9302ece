"""What each task prints, one function per task, over a loaded Cluster.

The work is the library's (hardway.pipeline runs the stages in order); these functions print what it
returns and return an exit code (0: all good). A HardwayError raised here becomes a clear message in
the task class (hardway.tasklib).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.markup import escape

from . import pipeline
from .errors import HardwayError
from .fsutil import clean_generated, inputs_beside, record_beside
from .output import console, err_console, progress
from .spec import Cluster

NO_CHANGES, FAILED, CHANGES_PENDING = 0, 1, 2  # plan --detailed-exitcode, as terraform's


def reported(body, as_json: bool = False, error_code: int | None = None) -> int:
    """Run a task body; a HardwayError (a bad spec included) is also printed as JSON on stdout when
    `as_json`, so a script reads JSON whatever happened, and exits with `error_code` when one is given."""
    try:
        return body()
    except HardwayError as e:
        if as_json:
            print(json.dumps({"ok": False, "error": str(e)}, indent=2))
        if error_code is not None:
            e.exit_code = error_code
        raise


def run_plan(cluster: Cluster, out: Path, as_json: bool = False, detailed: bool = False) -> int:
    """Print the plan (or JSON). Exit 0, or with `detailed`: 0 nothing to change, 1 an error, 2 changes pending."""
    if as_json:
        return _plan_json(cluster, out, detailed)
    from .pki import ERROR
    from .pki.reconcile import plan_report
    from .pki.report import actions_table, summary_line
    pipeline.check_out(out, "pki", "bundles")
    report = plan_report(cluster, out / "pki")
    actions = report.actions
    console.print(actions_table(actions, title=f"PKI store {out / 'pki'}"))
    for note in report.notes:
        console.print(f"[dim]note:[/] {escape(note)}")
    console.print(f"pki: {summary_line(actions, ('to create', 'to keep', 'to re-issue'))}")
    if any(a.action == ERROR for a in actions):
        console.print("bundles: not planned until the PKI store's errors above are fixed")
        return 1
    from .bundle import plan_bundles
    from .bundle.report import plan_lines, plan_summary
    changes = plan_bundles(cluster, out)
    _print_lines(plan_lines(changes, out / "bundles"))
    console.print(plan_summary(changes))
    from .deploy.plan import deploy_line
    console.print(deploy_line(changes), markup=False)
    return _plan_code(actions, changes) if detailed else 0


def _plan_code(actions, changes) -> int:
    from .bundle.diff import BundleStatus
    from .pki import KEEP
    pending = any(a.action != KEEP for a in actions) or any(c.status != BundleStatus.UNCHANGED for c in changes)
    return CHANGES_PENDING if pending else NO_CHANGES


def _plan_json(cluster: Cluster, out: Path, detailed: bool) -> int:
    from .bundle import plan_bundles
    from .pki import ERROR
    from .pki.reconcile import plan_report
    pipeline.check_out(out, "pki", "bundles")
    report = plan_report(cluster, out / "pki")
    failed = any(a.action == ERROR for a in report.actions)
    changes = [] if failed else plan_bundles(cluster, out)
    code = FAILED if failed else _plan_code(report.actions, changes)
    print(json.dumps({"ok": not failed, "changes": code == CHANGES_PENDING, "cluster": cluster.name,
                      "pki": {"actions": [a.to_dict() for a in report.actions], "notes": report.notes},
                      "bundles": None if failed else [c.to_dict() for c in changes],
                      "deploy": None if failed else _deploy_json(changes)}, indent=2))
    return code if detailed or failed else 0


def _deploy_json(changes) -> dict:
    from .deploy.plan import touched_by_deploy
    nodes, manifests = touched_by_deploy(changes)
    return {"nodes": nodes, "manifests": manifests}


def run_pki(cluster: Cluster, out: Path, import_ca: list[str], new_secret: list[str] = (),
            retire_old_encryption: bool = False, rename_cluster: bool = False) -> int:
    from .pki import KEEP, parse_import
    from .pki.report import actions_table, summary_line
    pipeline.check_out(out, "pki")
    imports = [parse_import(arg, cert_validity=cluster.cert_validity) for arg in import_ca]
    result = pipeline.reconcile_pki(cluster, out, import_ca=imports, new_secrets=new_secret,
                                    retire_old_encryption=retire_old_encryption, rename_cluster=rename_cluster,
                                    progress=progress)
    if any(a.action != KEEP for a in result.actions):
        console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}"))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {escape(note)}")
    console.print(f"pki: {summary_line(result.actions)} ({escape(str(out / 'pki'))})")
    return 0


def print_pki_step(result, out: Path) -> None:
    """The PKI step of the rendering tasks: its notes, and a summary line when it changed something."""
    from .pki import KEEP
    from .pki.report import summary_line
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {escape(note)}")
    if any(a.action != KEEP for a in result.actions):
        console.print(f"pki: {summary_line(result.actions)} ({escape(str(out / 'pki'))})")


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line)


def run_kubeconfigs(cluster: Cluster, out: Path) -> int:
    done = pipeline.kubeconfigs(cluster, out, progress=progress, on_pki=lambda r: print_pki_step(r, out))
    target, written = done.directory, done.written
    for name in written[:20]:
        console.print(f"wrote {target / name}", markup=False)
    if len(written) > 20:
        console.print(f"... and {len(written) - 20} more")
    for name in done.removed:
        console.print(f"removed {target / name} (no longer in the spec)", markup=False)
    for note in done.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"kubeconfigs: {len(written)} written, {len(done.unchanged)} unchanged, {len(done.removed)} removed ({target})", markup=False)
    return 0


def run_units(cluster: Cluster, out: Path) -> int:
    trees = pipeline.units(cluster, out, progress=progress, on_pki=lambda r: print_pki_step(r, out))
    plans = trees.plans
    shown = plans if len(plans) <= 30 else plans[:10] + plans[-1:]
    for p in shown:
        roles = ",".join(sorted(p.roles)) or "operator"
        console.print(f"{p.node:<20} {roles:<22} {p.notes.file_count:>3} files  {' '.join(p.units)}", markup=False)
    if len(shown) < len(plans):
        console.print(f"... and {len(plans) - len(shown)} more nodes")
    for note in trees.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"units: {len(plans)} file trees in {trees.directory} (one per node, plus the workstation)", markup=False)
    return 0


def print_bundle_run(run) -> None:
    """The bundle step: one line per created or updated bundle, then the counts."""
    from .bundle.report import run_lines
    _print_lines(run_lines(run))


def run_bundle(cluster: Cluster, out: Path) -> int:
    from .bundle.layout import README
    from .plan import WORKSTATION
    run = pipeline.bundle(cluster, out, progress=progress, on_pki=lambda r: print_pki_step(r, out))
    print_bundle_run(run)
    archive = run.bundles / f"{WORKSTATION}.tar.gz"
    console.print(f"next: `tar -xzf {archive}` and follow {WORKSTATION}/{README}: the bring-up order of the "
                  "whole cluster, node by node (each node's bundle has its own INSTALL.md)", markup=False)
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
            console.print(f"[yellow]warning:[/] {escape(w)}")
        for p in report.problems:
            console.print(f"[bold red]problem:[/] {escape(p)}")
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
        console.print(f"[dim]note:[/] {escape(note)}")
    for p in bundles.all_problems():
        console.print(f"[bold red]problem:[/] {escape(p)}")
    console.print(check_summary(bundles))


def run_credentials(cluster: Cluster, out: Path, kubeconfig: str | None, set_current: bool) -> int:
    from .credentials import ADMIN, default_path, merge_into_file, names
    from .pki import load_materials
    from .render.kubeconfigs import kubeconfig as render_kubeconfig
    materials = load_materials(cluster, out / "pki")
    path = Path(kubeconfig).expanduser() if kubeconfig else default_path()
    done = merge_into_file(path, render_kubeconfig(cluster, materials, ADMIN), cluster.name, set_current)
    console.print(f"credentials: context {done.context} {done.status} in {done.path}"
                  f"{' (a new file, mode 0600)' if done.new_file else ''}: cluster {cluster.name}, "
                  f"user {names(cluster.name)['users']}; other entries untouched", markup=False)
    console.print(f"try: kubectl --context {done.context} get nodes" if not done.current else
                  "try: kubectl get nodes", markup=False)
    if not done.current:
        console.print(f"`kubectl config use-context {done.context}` (or --set-current) makes it the current context",
                      markup=False)
    return 0


def run_renew(cluster: Cluster, out: Path, entry: str | None, node: str | None, rotate_keys: bool) -> int:
    from .pki import renew
    from .pki.report import actions_table, summary_line
    pipeline.check_out(out, "pki")
    result = renew(cluster, out / "pki", entry=entry, node=node, rotate_keys=rotate_keys, progress=progress)
    console.print(actions_table(result.actions, title=f"PKI store {out / 'pki'}", show_kept=True))
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {escape(note)}")
    console.print(f"renew: {summary_line(result.actions, ('created', 'CAs reported', 'renewed'))}")
    return 0


def run_deploy(cluster: Cluster, out: Path, *, only: list[str], role: str | None, start: bool, dry_run: bool,
               parallel: int, accept_new: bool, known_hosts: str | None, remote_root: str | None, manifests: bool,
               timeout: float, kubectl: str) -> int:
    """`hardway deploy`: the end table, the notes, and the failed nodes with the end of their output."""
    from .deploy import plan as deploy_plan
    try:
        from .deploy.run import Options, deploy
        import fabric  # noqa: F401
    except ImportError:
        raise HardwayError("`hardway deploy` needs Fabric, an optional extra: pip install 'hardway[deploy]' "
                           "(Fabric 3.2)") from None
    if parallel < 1:
        raise HardwayError(f"--parallel {parallel}: give at least 1")
    root = deploy_plan.parse_remote_root(remote_root)
    if root and start:
        err_console.print("[dim]note:[/] --remote-root installs under a directory, where nothing can be started: "
                          "no --start (as with --no-start)")
        start = False
    options = Options(only=tuple(only), role=role, start=start, dry_run=dry_run, parallel=parallel,
                      accept_new=accept_new, remote_root=root, manifests=manifests, timeout=timeout, kubectl=kubectl,
                      **({"known_hosts": Path(known_hosts).expanduser()} if known_hosts else {}))
    report = deploy(cluster, out, options, say=lambda line: err_console.print(line, markup=False))
    from rich.table import Table
    table = Table("node", "action", "result", "time", title="deploy" + (" (dry run)" if dry_run else ""),
                  box=None, title_justify="left")
    for r in report.rows:
        style = "" if r.ok else "bold red"
        table.add_row(escape(r.node), escape(r.action), f"[{style}]{escape(r.result)}[/]" if style else escape(r.result),
                      f"{r.seconds:.1f}s")
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]note:[/] {escape(note)}")
    if report.failed:
        for r in report.failed:
            if r.tail:
                console.print(f"--- {r.node}: the end of its output", markup=False)
                console.print(r.tail, markup=False)
        names = [r.node for r in report.failed]
        console.print(f"deploy: {len(names)} failed: {', '.join(names)}; fix them and run deploy again "
                      "(nodes already done are skipped)", markup=False)
        return 1
    if dry_run:
        current = sum(1 for r in report.rows if r.action == "up to date")
        console.print(f"deploy (dry run): {len(report.rows) - current} to do, {current} up to date; nothing changed",
                      markup=False)
        return 0
    done = sum(1 for r in report.rows if r.result.startswith("ok"))
    skipped = sum(1 for r in report.rows if r.result.startswith("skipped"))
    console.print(f"deploy: {done} done, {skipped} up to date", markup=False)
    return 0


# What the stages write under <out>; `clean` removes these and nothing else, so a mistaken
# `--out .` cannot take the user's own files with it. The PKI store is removed only on request.
GENERATED = (pipeline.BUNDLES, pipeline.KUBECONFIGS, pipeline.NODES, "ansible")  # ansible: `hardway ansible`'s default --dir
PKI_STORE = pipeline.PKI


def run_clean(root: Path, pki: bool = False, yes: bool = False) -> None:
    """`clean`: remove the generated output under `root`, and the PKI store with `pki` and `yes`."""
    if pki and not yes:
        raise HardwayError(f"--pki deletes {root / PKI_STORE} (the CAs and the encryption key of any cluster built "
                           "from it); add --yes to confirm")
    if not root.is_dir():
        console.print(f"nothing to clean: {root} is not a directory" if root.exists() else f"nothing to clean: {root} does not exist",
                      markup=False)
        return
    removed = 0
    for name in GENERATED + ((PKI_STORE,) if pki else ()):
        child = root / name
        try:
            if (child.is_symlink() and not child.is_dir()) or child.is_file() or (name == PKI_STORE and child.is_symlink()):
                child.unlink()  # the link (or a stray file) itself, never what a link leads to
                record_beside(child).unlink(missing_ok=True)
                inputs_beside(child).unlink(missing_ok=True)
            elif not child.is_dir():
                continue
            elif name == PKI_STORE:
                shutil.rmtree(child)  # asked for with --pki --yes
            else:
                left = clean_generated(child)
                if left:
                    console.print(f"kept in {child}: {', '.join(left[:5])}{', ...' if len(left) > 5 else ''} "
                                  f"({len(left)} file(s) hardway did not write)", markup=False)
                    continue
        except OSError as e:  # a read-only mount: rmtree names a file relative to a directory it opened
            raise HardwayError(f"cannot remove {child}: {e.strerror or e}") from None
        removed += 1
        console.print(f"removed {child}", markup=False)
    if not pki and (root / PKI_STORE).exists():
        console.print(f"kept {root / PKI_STORE} (the PKI store; `clean --pki --yes` removes it)", markup=False)
    others = sorted(p.name for p in root.iterdir() if p.name not in GENERATED + (PKI_STORE,))
    if others:
        console.print(f"[dim]left alone in {escape(str(root))}: {escape(', '.join(others))} "
                      f"(clean removes only {', '.join(GENERATED)}, and {PKI_STORE} with --pki --yes)[/]")
    if not removed:
        console.print(f"nothing to clean in {root}", markup=False)

