"""The `lab.*` tasks: `hardway lab.up`, `lab.status`, `lab.down`, `lab.binaries`. Thin: parse flags,
call hardway.lab, print. The task class and the shared defaults are hardway.tasklib's."""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection

from ..tasklib import SPEC_HELP, load, out_dir, task

OUT_HELP = "output directory (default: ./out): bundles are written there, the lab lives in <out>/lab"
LABDIR_HELP = "where the lab keeps its state, roots and logs (default: <out>/lab)"


def _labdir(c, out: str | None, lab_dir: str | None) -> Path:
    return Path(lab_dir) if lab_dir else out_dir(c, out) / "lab"


@task(help={"spec": SPEC_HELP, "out": OUT_HELP, "lab-dir": LABDIR_HELP,
            "bin-dir": "a directory of official release binaries to use first (also: HARDWAY_BIN_DIR)",
            "timeout": "seconds each component may take to become ready (default 180)",
            "network-only": "bundle and build the network, install nothing and start nothing: each node's root "
                            "<labdir>/<node>/root is left empty for `hardway deploy --remote-root` (docs/deploy.md)",
            "installed": "go on from a --network-only lab whose roots were installed since: start every node "
                         "from what is installed there"})
def up(c, spec=None, out=None, lab_dir=None, bin_dir=None, timeout=180, network_only=False, installed=False):
    """Boot the spec's control plane from its bundles in network namespaces (needs root)."""
    from ..commands import print_bundle_run, print_pki_step
    from ..errors import HardwayError
    from ..output import console, err_console
    from ..plan import WORKSTATION
    from .lab import UP_ALL, UP_INSTALLED, UP_NETWORK, WS_SCRIPT, up as lab_up

    if network_only and installed:
        raise HardwayError("--network-only and --installed are the two halves of one bring-up: give one of them")
    mode = UP_NETWORK if network_only else UP_INSTALLED if installed else UP_ALL
    cluster = load(c, spec, out_dir(c, out))
    lab = lab_up(cluster, out_dir(c, out), labdir=_labdir(c, out, lab_dir), bin_dir=bin_dir, timeout=float(timeout),
                 say=lambda line: err_console.print(line, markup=False),
                 on_pki=lambda r: print_pki_step(r, out_dir(c, out)), on_bundle=print_bundle_run, mode=mode)
    if mode == UP_NETWORK:
        ws = lab.network.member(WORKSTATION)
        console.print(f"lab {lab.cluster}: network up in {lab.labdir}, nothing installed or started", markup=False)
        for m in lab.network.members:
            console.print(f"  {m.node}: namespace {m.netns}, {m.address}", markup=False)
        console.print(f"install each node under {lab.labdir}/<node>/root (from namespace {ws.netns}: "
                      f"`hardway deploy --remote-root '{lab.labdir}/{{node}}/root'`), then `hardway lab.up --installed "
                      f"--lab-dir {lab.labdir}`", markup=False)
        return
    console.print(f"lab {lab.cluster} is up in {lab.labdir}: {len(lab.processes)} processes, all ready")
    for note in lab.notes:
        console.print(f"  note: {note}", markup=False)
    ws = lab.network.member(WORKSTATION)
    console.print(f"clients run in namespace {ws.netns} ({ws.address}); the host cannot reach the lab:", markup=False)
    console.print(f"  sh {lab.labdir / WS_SCRIPT} kubectl get --raw /readyz", markup=False)
    console.print(f"`hardway lab.status --lab-dir {lab.labdir}` shows it, `hardway lab.down --lab-dir {lab.labdir}` stops it",
                  markup=False)


@task(help={"out": OUT_HELP, "lab-dir": LABDIR_HELP})
def status(c, out=None, lab_dir=None):
    """Show every lab process (alive, PID, log) and whether each component answers its readiness probe."""
    from rich.table import Table

    from ..output import console
    from .lab import status as lab_status

    lab, rows, checks = lab_status(_labdir(c, out, lab_dir))
    table = Table("node", "unit", "pid", "state", f"log (in {lab.labdir})", title=f"lab {lab.cluster}")
    for r in rows:
        table.add_row(r.process.node, r.process.unit, str(r.process.pid),
                      "[green]running[/]" if r.alive else "[red]not running[/]",
                      os.path.relpath(r.process.log, lab.labdir))
    console.print(table)
    ready = Table("probe (from node)", "ready", "answer")
    for probe, ok, answer in checks:
        ready.add_row(f"{probe.what} ({probe.node})", "[green]yes[/]" if ok else "[red]no[/]", answer)
    console.print(ready)
    for note in lab.notes:
        console.print(f"note: {note}", markup=False)
    return 0 if all(r.alive for r in rows) and all(ok for _, ok, _ in checks) else 1


@task(help={"out": OUT_HELP, "lab-dir": LABDIR_HELP})
def down(c, out=None, lab_dir=None):
    """Stop every lab process and delete its namespaces. Safe to run twice, or when nothing is up."""
    from ..output import console
    from .lab import down as lab_down

    labdir = _labdir(c, out, lab_dir)
    done = lab_down(labdir)
    for line in done:
        console.print(line, markup=False)
    console.print(f"lab in {labdir.absolute()} is down" if done else f"nothing was up in {labdir.absolute()}")


@task(help={"version": "Kubernetes version to build (default: the one pinned in tools/k8s/go.mod)"})
def binaries(c, version=None):
    """Build the real binaries the lab runs: Kubernetes, etcd, and the workers' containerd, runc, CNI plugins,
    crictl, CoreDNS, pause and busybox (from pinned Go modules and Debian packages; slow the first time)."""
    from .. import binaries as b
    from ..errors import HardwayError
    from ..output import console, err_console, progress

    try:
        v = version or b.pinned_version()
        todo = [n for n in b.ALL_BINARIES if not (b.cache_dir(v) / n).exists()]
        with progress(f"building {v}", len(todo)) as advance:
            def report(name, index, total):
                advance()
                err_console.print(f"[{index}/{total}] building {name} {v} ...", markup=False)
            paths = b.build(v, only=b.ALL_BINARIES, progress=report)
    except b.BuildError as e:
        raise HardwayError(str(e)) from None
    for name, path in paths.items():
        console.print(f"{name}: {path}", markup=False)
    console.print(f"{len(paths)} binaries in {b.cache_dir(v)}; `hardway lab.up` uses them")


collection = Collection("lab", up, status, down, binaries)
