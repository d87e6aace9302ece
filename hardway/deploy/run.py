"""A deploy run: check the bundles as `hardway check` does, then per phase (load balancers,
controllers, the API's /readyz and the workstation manifests, workers) connect, ask each node what
it has, and do what plan.decide says, nodes of a phase in parallel. A failed load balancer or
controller stops the run before the workers (they need the API); a failed worker stops only itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HardwayError
from ..plan import WORKSTATION
from ..spec import Cluster
from . import plan as p
from .targets import Target, targets as all_targets

Say = Callable[[str], None]
MANIFESTS = "manifests"  # the row of the manifests step in the end table


@dataclass(frozen=True)
class Options:
    only: tuple[str, ...] = ()
    role: str | None = None
    start: bool = True
    dry_run: bool = False
    parallel: int = 10
    accept_new: bool = False
    known_hosts: Path = Path("~/.ssh/known_hosts").expanduser()
    remote_root: str | None = None  # already checked by plan.parse_remote_root
    manifests: bool = False  # wait for /readyz and apply the manifests even with --no-start
    timeout: float = 300.0  # seconds to wait for /readyz
    kubectl: str = "kubectl"


@dataclass
class Report:
    rows: list[p.NodeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[p.NodeResult]:
        return [r for r in self.rows if not r.ok]


def check_local(cluster: Cluster, out: Path) -> None:
    """The verification `hardway check` makes, before anything leaves this machine."""
    from ..bundle import check_bundles
    from ..pipeline import check_out
    from ..pki import check_store, load_materials
    check_out(out, "pki", "bundles")
    store = check_store(cluster, out / "pki")
    try:
        materials, error = load_materials(cluster, out / "pki"), None
    except HardwayError as e:
        materials, error = None, str(e)
    bundles = check_bundles(cluster, out, materials, error)
    problems = list(store.problems) + list(bundles.all_problems())
    if not bundles.rows:
        problems.append(f"no bundles in {out / 'bundles'}: run `hardway bundle` first")
    if problems:
        shown = "\n".join(f"  {x}" for x in problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise HardwayError(f"the bundles in {out / 'bundles'} fail `hardway check`, nothing deployed:\n{shown}\n"
                           "run `hardway bundle`, then `hardway check`")


def deploy(cluster: Cluster, out: Path, options: Options, say: Say) -> Report:
    from . import remote  # Fabric: only now
    chosen = p.select(all_targets(cluster), list(options.only), options.role)
    bundles = out / "bundles"
    # The bytes uploaded are the bytes read here, and the checks below saw the same file.
    archives = {t.node: _read_archive(bundles / f"{t.node}.tar.gz") for t in chosen}
    check_local(cluster, out)
    digests = {node: p.digest_of(data) for node, data in archives.items()}
    for node, digest in digests.items():
        if p.digest_of(_read_archive(bundles / f"{node}.tar.gz")) != digest:
            raise HardwayError(f"{bundles / f'{node}.tar.gz'} changed while it was being checked; nothing deployed: "
                               "run deploy again once `hardway bundle` is done")
    policy = remote.HostKeyPolicy(options.known_hosts, options.accept_new)
    report = Report()
    accepted: list[str] = []
    started_controllers: list[Target] = []
    conns: dict[str, object] = {}

    def one(t: Target) -> p.NodeResult:
        began = time.monotonic()
        row = _node(remote, t, archives[t.node], digests[t.node], options, policy, accepted, conns)
        row.seconds = time.monotonic() - began
        say(f"{t.node}: {row.action}: {row.result} ({row.seconds:.1f}s)")
        return row

    def api_step() -> bool:
        if options.dry_run or not (started_controllers or options.manifests):
            return True
        step = _api_and_manifests(cluster, out, options, remote, conns, say)
        report.rows.append(step)
        return step.ok

    blocked = ""
    try:
        for phase_name, batch in p.phases(chosen):
            if not blocked and phase_name == "worker" and not api_step():
                blocked = "the API or the manifests step failed first"
            if blocked:
                report.rows += [p.NodeResult(t.node, p.Step.NOT_ATTEMPTED, blocked, ok=False) for t in batch]
                continue
            width = len(batch) if phase_name != "worker" else max(1, options.parallel)
            with ThreadPoolExecutor(max_workers=min(width, len(batch))) as pool:
                rows = list(pool.map(one, batch))
            report.rows += rows
            if phase_name == "controller":
                started_controllers = [t for t, r in zip(batch, rows) if r.ok and options.start]
            if phase_name != "worker" and any(not r.ok for r in rows):
                blocked = f"a {phase_name} failed first (the workers need the API)"
        if not blocked and not any(ph == "worker" for ph, _ in p.phases(chosen)):
            api_step()
    finally:
        for c in conns.values():
            remote.close(c)
    report.notes += accepted
    if not options.start and not options.manifests and any(ph == "controller" for ph, _ in p.phases(chosen)):
        report.notes.append("--no-start: no wait for /readyz and no manifests; once the API answers, the workstation "
                            "applies them (its README, step 4), or `hardway deploy --manifests` does")
    return report


def _read_archive(path: Path) -> bytes:
    """A bundle archive's bytes: a regular file, never through a link (out/ is not trusted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise HardwayError(f"{path} is missing: run `hardway bundle` first") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HardwayError(f"{path} is a symbolic link; deploy follows no link under the output directory: "
                               "run `hardway bundle` to write the archive again") from None
        raise HardwayError(f"cannot read {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise HardwayError(f"{path} is not a regular file")
        return f.read()


def _node(remote, t: Target, data: bytes, digest: str, options: Options, policy, accepted, conns) -> p.NodeResult:
    state = p.state_dir(options.remote_root, t.node)
    root = p.node_root(options.remote_root, t.node)
    wrap = lambda cmd: p.as_user(cmd, t.user)  # noqa: E731
    try:
        conn = remote.connect(t, policy, accepted)
    except remote.NodeFailure as e:
        return p.NodeResult(t.node, p.Step.CONNECT, f"failed: {e}", ok=False)
    conns[t.node] = conn
    status, output = remote.run(conn, wrap(p.probe_command(state, digest, t.node)), timeout=60)
    if status != 0:
        return p.NodeResult(t.node, p.Step.PROBE, f"failed: cannot read the node's state (exit {status})",
                            tail=_tail(output), ok=False)
    action = p.decide(digest, p.parse_probe(output, digest), options.start)
    if options.dry_run:
        return p.NodeResult(t.node, str(action), "dry run: nothing changed")
    if action == p.Action.SKIP:
        return p.NodeResult(t.node, str(action), "skipped")
    if action == p.Action.UPLOAD:
        status, output = remote.send(conn, wrap(p.upload_command(state, digest, t.node)), data)
        if status != 0:
            return p.NodeResult(t.node, str(action), f"failed: upload (exit {status})", tail=_tail(output), ok=False)
        status, output = remote.run(conn, wrap(p.verify_command(state, digest, t.node)), timeout=120)
        if status == p.DIGEST_MISMATCH:
            return p.NodeResult(t.node, str(action), f"failed: the archive on the node is not the {len(data)} bytes "
                                f"hardway wrote (sha256 {digest[:16]}...); nothing installed", tail=_tail(output), ok=False)
        if status != 0:
            return p.NodeResult(t.node, str(action), f"failed: checking the upload (exit {status})", tail=_tail(output),
                                ok=False)
    status, output = remote.run(conn, wrap(p.install_command(state, digest, t.node, root, options.start)))
    if status != 0:
        why = "connection lost during install.sh" if status == -1 else f"install.sh exit {status}"
        return p.NodeResult(t.node, str(action), f"failed: {why}", tail=_tail(output), ok=False)
    summary = next((l for l in reversed(output.splitlines()) if l.startswith(f"node {t.node}:")), "installed")
    return p.NodeResult(t.node, str(action), "ok: " + summary.removeprefix(f"node {t.node}: "),
                        lines=output.splitlines())


def _tail(output: str, lines: int = 12) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


# ---------------------------------------------------------------- the API, the manifests --------

def _api_and_manifests(cluster: Cluster, out: Path, options: Options, remote, conns, say: Say) -> p.NodeResult:
    """The README's step 4: once the API answers /readyz through its endpoint, the workstation
    applies the manifests with super-admin; recorded on the first controller, so a re-run with the
    same manifests skips it."""
    from ..fsutil import extract_bundle
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hardway-deploy-") as tmp:
        extract_bundle(out / "bundles" / f"{WORKSTATION}.tar.gz", Path(tmp))
        ws = Path(tmp) / WORKSTATION
        files = [(str(f.relative_to(ws)), f.read_bytes()) for f in sorted((ws / "manifests").rglob("*")) if f.is_file()]
        digest = p.manifests_digest(files)
        say(f"waiting for {cluster.api_url}/readyz (up to {options.timeout:.0f}s)")
        answer = _wait_readyz(cluster.api_url, ws / "ca.crt", options.timeout)
        if answer is not None:
            return p.NodeResult(MANIFESTS, p.Step.READYZ, f"failed: {cluster.api_url}/readyz did not answer ok "
                                f"within {options.timeout:.0f}s: {answer}", time.monotonic() - began, ok=False)
        first = cluster.controllers[0]
        conn = conns.get(first.name)
        state = p.state_dir(options.remote_root, first.name)
        user = next(t.user for t in all_targets(cluster) if t.node == first.name)
        if conn is not None:
            status, recorded = remote.run(conn, p.as_user(p.manifests_read_command(state), user), timeout=60)
            if status == 0 and recorded.strip() == digest:
                return p.NodeResult(MANIFESTS, p.Step.MANIFESTS, "skipped: up to date", time.monotonic() - began)
        kubectl = shutil.which(options.kubectl)
        if kubectl is None:
            return p.NodeResult(MANIFESTS, p.Step.MANIFESTS, f"failed: no {options.kubectl} on this workstation; "
                                "install kubectl, or apply them by hand (workstation README, step 4)",
                                time.monotonic() - began, ok=False)
        done = subprocess.run([kubectl, f"--kubeconfig={ws / 'super-admin.kubeconfig'}", "apply", "-f",
                               str(ws / "manifests")], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HOME": tmp})
        if done.returncode != 0:
            return p.NodeResult(MANIFESTS, p.Step.MANIFESTS, f"failed: kubectl apply exit {done.returncode}",
                                time.monotonic() - began, tail=_tail(done.stdout + done.stderr), ok=False)
        if conn is not None:
            remote.run(conn, p.as_user(p.manifests_record_command(state, digest), user), timeout=60)
        return p.NodeResult(MANIFESTS, p.Step.MANIFESTS, f"ok: {len(files)} manifest(s) applied",
                            time.monotonic() - began)


def _wait_readyz(api_url: str, ca: Path, timeout: float) -> str | None:
    """None once GET /readyz answers 200 ok, verified against the cluster CA; else the last answer."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{api_url}/readyz", context=context, timeout=5) as r:
                body = r.read(200).decode(errors="replace").strip()
                if r.status == 200 and body == "ok":
                    return None
                last = f"{r.status} {body}"
        except Exception as e:  # noqa: BLE001  (refused, reset, TLS, HTTP error: all mean not yet)
            last = str(e)
        if time.monotonic() > deadline:
            return last
        time.sleep(2)
