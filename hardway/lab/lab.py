"""`lab.up`, `lab.status`, `lab.down`: a cluster's control plane from its own bundles, on one machine.

up:   bundle the spec (`hardway bundle`), install each controller's and load balancer's bundle with
      its own `install.sh --root <labdir>/<node>/root`, build the network (netns.py), then start
      every unit from the unit file install.sh installed, in a global order (all etcd members, all
      API servers, controller-managers and schedulers, load balancers), each inside its node's
      namespace (sandbox.py), waiting for each stage to answer its readiness probe (probes.py).
status: every process (alive, PID, log) and every probe's answer.
down: stop every process by PID (SIGTERM, then SIGKILL), then delete every namespace (their veths go
      with them). Idempotent, and safe when nothing is up. Logs and installed roots stay for reading.

The state of a lab is one JSON file, `<labdir>/lab.json`, written before each side effect it
records, so that `down` can undo a half-finished `up`. Workers are not simulated: they need a
container runtime and a kubelet, which the lab does not run.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .. import binaries as binaries_mod
from ..names import is_ip
from ..plan import WORKSTATION
from ..spec import Cluster
from . import netns, procs, workers as wk
from .netns import LabError, Network
from .probes import Probe, host_path, loadbalancer_probe, probe_for, run_probe
from .procs import Process
from .sandbox import CLEAN_PATH, Sandbox, mount_roots
from .units import ServiceUnit, UnitError, parse_unit
from ..fsutil import atomic_write, extract_bundle

# The order the lab starts components in, across nodes: the workstation README's bring-up order.
# The load balancer first (its API probe is awaited once the controllers are up), then the
# controllers: every etcd member (so a three-member cluster can reach quorum), the API servers, the
# controller-managers and schedulers. Stage 4 has no unit: the workstation applies its manifests with
# super-admin. Then the workers: pod-nat's iptables and containerd, the images (stage 6), the kubelet
# and kube-proxy; last the pod routes (stage 8), and every Node Ready with CoreDNS Available.
STAGES = {"haproxy": 0, "etcd": 1, "kube-apiserver": 2, "kube-controller-manager": 3, "kube-scheduler": 3,
          "iptables": 5, "ip6tables": 5, "containerd": 5, "kubelet": 7, "kube-proxy": 7}
CONTROL_PLANE_STAGE, MANIFESTS_STAGE, IMAGES_STAGE, ROUTES_STAGE = 3, 4, 6, 8
LAB_BINARIES = ("etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
WORKER_BINARIES = ("kubelet", "kube-proxy") + binaries_mod.WORKER_BINARIES
HOLDER = "node-namespace"  # the process whose namespaces a worker's units share
# Units whose work the lab does itself, from the same plan: pod-routes.service's routes are the plan's
# notes, which _add_routes adds in each node's namespace (the unit has one ExecStart= per route).
DONE_BY_THE_LAB = ("pod-routes.service",)

STATE = "lab.json"
HOSTS = "hosts.txt"  # node names are DNS labels (no dot): no node directory can clash with these
WS_SCRIPT = "workstation.sh"
UNIT_DIR = "etc/systemd/system"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _ignore(_) -> None:
    pass


@dataclass
class Lab:
    """A lab as recorded in lab.json; methods run programs inside it."""

    labdir: Path
    cluster: str
    version: str
    api_url: str
    network: Network | None = None
    namespaces: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    binds: dict[str, list[list[str]]] = field(default_factory=dict)  # node -> [[host source, node path]]
    notes: list[str] = field(default_factory=list)  # what the lab does differently from real nodes
    setup: dict[str, list[str]] = field(default_factory=dict)  # node -> shell lines of its namespace
    cgroups: list[str] = field(default_factory=list)  # kubelets' cgroup roots, removed by down

    # ------------------------------------------------------------ paths

    @property
    def bin_dir(self) -> Path:
        return self.labdir / "bin"

    @property
    def hosts_file(self) -> Path:
        return self.labdir / HOSTS

    @property
    def workstation(self) -> Path:
        """The unpacked workstation bundle: admin.kubeconfig, ca.crt, manifests/."""
        return self.labdir / WORKSTATION

    def root(self, node: str) -> Path:
        return self.labdir / node / "root"

    def on_host(self, node: str, path: str) -> Path:
        """Where a file of a node (or of the workstation bundle) is on this machine."""
        base = self.workstation if node == WORKSTATION else self.root(node)
        return base / path.lstrip("/")

    # ------------------------------------------------------------ state

    def save(self) -> None:
        self.labdir.mkdir(parents=True, exist_ok=True)
        data = {
            "cluster": self.cluster, "version": self.version, "api_url": self.api_url,
            "network": self.network.to_dict() if self.network else None,
            "namespaces": self.namespaces,
            "processes": [p.to_dict() for p in self.processes],
            "probes": [p.to_dict() for p in self.probes],
            "binds": self.binds, "notes": self.notes, "setup": self.setup, "cgroups": self.cgroups,
        }
        atomic_write(self.labdir / STATE, (json.dumps(data, indent=1) + "\n").encode(), 0o644)

    @classmethod
    def load(cls, labdir: Path) -> "Lab":
        labdir = Path(labdir).absolute()
        try:
            data = json.loads((labdir / STATE).read_text())
        except FileNotFoundError:
            raise LabError(f"no lab in {labdir} (no {STATE}); start one with `hardway lab.up`") from None
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read {labdir / STATE}: {e}") from None
        return cls(
            labdir=labdir, cluster=data["cluster"], version=data["version"], api_url=data["api_url"],
            network=Network.from_dict(data["network"]) if data.get("network") else None,
            namespaces=list(data.get("namespaces", [])),
            processes=[Process.from_dict(p) for p in data.get("processes", [])],
            probes=[Probe.from_dict(p) for p in data.get("probes", [])],
            binds=data.get("binds", {}), notes=list(data.get("notes", [])),
            setup=data.get("setup", {}), cgroups=list(data.get("cgroups", [])),
        )

    # ------------------------------------------------------------ running things inside

    def sandbox(self, node: str) -> Sandbox:
        if self.network is None:
            raise LabError("the lab has no network yet")
        return Sandbox(
            netns=self.network.member(node).netns,
            hostname=node,
            hosts_file=self.hosts_file,
            scratch=self.labdir / node / ".mnt" if node != WORKSTATION else self.labdir / ".mnt-workstation",
            binds=tuple((Path(src), dst) for src, dst in self.binds.get(node, [])),
            setup=tuple(self.setup.get(node, [])),
        )

    def env(self, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        # kubectl keeps a discovery cache under $HOME: keep it in the lab, not in ~/.kube.
        env = {"PATH": f"{self.bin_dir}:{CLEAN_PATH}", "HOME": str(self.labdir / ".home")}
        if node == WORKSTATION:
            env["KUBECONFIG"] = str(self.workstation / "admin.kubeconfig")
        env.update(extra or {})
        return env

    def holder(self, node: str) -> Process | None:
        return next((p for p in self.processes if p.node == node and p.unit == HOLDER), None)

    def command(self, node: str, argv: list[str], workdir: str | None = None) -> list[str]:
        """The host command line that runs `argv` on a node: in the namespaces its holder keeps
        (workers), or in a sandbox of its own (controllers, load balancers, the workstation)."""
        holder = self.holder(node)
        if holder is None:
            return self.sandbox(node).command(argv, workdir)
        return ["nsenter", "-t", str(holder.pid), "-m", "-u", "-n", *([f"--wd={workdir}"] if workdir else []),
                "--", *argv]

    def run(self, node: str, argv: list[str], *, timeout: float = 60, input: str | bytes | None = None,
            env: dict[str, str] | None = None, text: bool = True) -> subprocess.CompletedProcess:
        """Run a program on a node (or WORKSTATION) of the lab; output captured (as text by default)."""
        self.scratch_dir(node)
        return subprocess.run(self.command(node, argv), capture_output=True, text=text, timeout=timeout,
                              input=input, env=self.env(node, env))

    def scratch_dir(self, node: str) -> Path:
        path = self.sandbox(node).scratch
        path.mkdir(parents=True, exist_ok=True)
        return path

    def process(self, node: str, unit: str) -> Process:
        for p in self.processes:
            if p.node == node and p.unit in (unit, f"{unit}.service"):
                return p
        raise KeyError(f"{node}/{unit}")

    def stop_unit(self, node: str, unit: str, grace: float = 10.0) -> None:
        """Stop one process of the lab (the HA test takes a controller's members away)."""
        procs.stop([self.process(node, unit)], grace)

    def check(self) -> list[tuple[Probe, bool, str]]:
        """Every readiness probe of the lab, run now: (probe, ready, answer)."""
        return [(p, *self.probe(p)) for p in self.probes]

    def probe(self, probe: Probe) -> tuple[bool, str]:
        return run_probe(probe, self._probe_command)

    def _probe_command(self, node: str, argv: list[str]) -> list[str]:
        self.scratch_dir(node)
        return self.command(node, argv)


# ---------------------------------------------------------------- up ----------------------------

def find_lab_binaries(cluster: Cluster, bin_dir: str | None) -> dict[str, Path]:
    version = str(cluster.version)
    found = binaries_mod.find_binaries(version, bin_dir)
    if cluster.workers:
        found.update(binaries_mod.find_worker_binaries(version, bin_dir))
    needed = LAB_BINARIES + (WORKER_BINARIES if cluster.workers else ())
    missing = [b for b in needed if b not in found]
    if cluster.workers:
        plugins = binaries_mod.find_cni_plugins(version, bin_dir)
        missing += [f"cni/{p}" for p in binaries_mod.CNI_PLUGINS if p not in plugins]
        found.update({f"cni/{name}": path for name, path in plugins.items()})
    if missing:
        where = [str(d) for d in ([bin_dir] if bin_dir else []) + ([os.environ["HARDWAY_BIN_DIR"]] if os.environ.get("HARDWAY_BIN_DIR") else [])]
        where.append(str(binaries_mod.cache_dir(version)))
        raise LabError(
            f"the lab needs the {version} binaries {', '.join(missing)}, not found in {', '.join(where)}; "
            f"build them with `hardway lab.binaries` (or `python -m hardway.binaries`), or point "
            f"--bin-dir / HARDWAY_BIN_DIR at a directory holding the official release binaries")
    return found


def find_haproxy() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not path:
        raise LabError("the cluster has a load balancer, and the lab runs it with HAProxy, which is not "
                       "installed: `apt-get update && apt-get install -y haproxy`")
    return path


def is_up(labdir: Path) -> bool:
    """Whether anything of a lab still exists: a live process or a namespace."""
    labdir = Path(labdir).absolute()
    if netns.existing_namespaces(netns.lab_prefix(labdir)):
        return True
    try:
        lab = Lab.load(labdir)
    except LabError:
        return False
    return any(procs.alive(p) for p in lab.processes)


# What `up` does (`lab.up --network-only`, `--installed`; docs/deploy.md): everything; or only the
# bundles and the network, with every node's root left empty for something else to install (deploy
# over SSH, into <labdir>/<node>/root); or, after that, the rest from the roots as installed.
UP_ALL, UP_NETWORK, UP_INSTALLED = "all", "network", "installed"


def up(cluster: Cluster, out: Path, *, labdir: Path | None = None, bin_dir: str | None = None,
       timeout: float = 180.0, say: Say = _quiet, on_pki: Callable = _ignore, on_bundle: Callable = _ignore,
       mode: str = UP_ALL) -> Lab:
    """Bring the lab up; on any failure, take down everything started so far and raise. `on_pki` and
    `on_bundle` get the pki ReconcileResult and the BundleRun, for the caller to report. `mode`:
    UP_ALL, UP_NETWORK (stop once the namespaces exist, nothing installed) or UP_INSTALLED (go on from
    an UP_NETWORK lab whose roots were installed since)."""
    out = Path(out).absolute()
    labdir = Path(labdir or out / "lab").absolute()
    netns.require_netns_support()
    found = find_lab_binaries(cluster, bin_dir)
    if cluster.loadbalancers:
        find_haproxy()
    if mode == UP_INSTALLED:
        lab = _network_only_lab(labdir, cluster)
    else:
        if is_up(labdir):
            raise LabError(f"a lab is already up in {labdir}; `hardway lab.down --lab-dir {labdir}` first")
        if (labdir / STATE).exists():
            down(labdir)  # leftovers of a lab that died: nothing runs, clear the record
        say(f"bundling {cluster.name} into {out}/bundles")
        from ..pipeline import bundle
        on_bundle(bundle(cluster, out, on_pki=on_pki))
        lab = Lab(labdir=labdir, cluster=cluster.name, version=str(cluster.version), api_url=cluster.api_url)
    from ..pki import load_materials
    from ..render import node_plan
    materials = load_materials(cluster, out / "pki")

    nodes = netns.lab_nodes(cluster)
    lab.save()
    try:
        _link_binaries(lab, found)
        plans = {n.name: node_plan(cluster, materials, n.name) for n in nodes}
        ws_plan = node_plan(cluster, materials, WORKSTATION)
        for node in nodes:
            if mode == UP_ALL:
                say(f"installing the {node.name} bundle with its install.sh")
                _install(lab, out, node.name)
            elif mode == UP_NETWORK:
                _clear(lab, node.name)
            elif not (lab.root(node.name) / UNIT_DIR).is_dir():
                raise LabError(f"{node.name}: nothing is installed under {lab.root(node.name)} (no /{UNIT_DIR}); install "
                               f"its bundle there first, e.g. `hardway deploy --remote-root '{labdir}/{{node}}/root'`")
        if mode != UP_NETWORK:
            _unpack_workstation(lab, out)
            overlays = _worker_overlays(lab, cluster, say)
            services = _read_units(lab, plans, overlays, say)
        if mode != UP_INSTALLED:
            lab.network = netns.plan_network(cluster, netns.lab_prefix(labdir))
            lab.save()
            say(f"network: {lab.network.subnet} on a bridge in namespace {lab.network.bridge_netns}; "
                f"workstation at {lab.network.member(WORKSTATION).address}")

            def record(name: str) -> None:
                lab.namespaces.append(name)
                lab.save()
            netns.create(lab.network, record)
            _write_hosts(lab, cluster, ws_plan, plans)
            _write_workstation_script(lab)
        if mode == UP_NETWORK:
            return lab
        _prepare_nodes(lab, cluster, say)
        _start(lab, cluster, services, plans, timeout, say)
    except BaseException:
        say("failed: taking the lab down again")
        down(labdir)
        raise
    return lab


def _clear(lab: Lab, node: str) -> None:
    """A node of a network-only lab: an empty root, for deploy to install into."""
    base = lab.labdir / node
    for sub in ("bundle", "root", "logs", "run", ".mnt", "overlay"):
        shutil.rmtree(base / sub, ignore_errors=True)
    (base / "install.log").unlink(missing_ok=True)
    lab.root(node).mkdir(parents=True)


def _network_only_lab(labdir: Path, cluster: Cluster) -> Lab:
    """The lab `lab.up --network-only` left: its namespaces there, nothing started yet."""
    lab = Lab.load(labdir)
    present = set(netns.existing_namespaces())
    if lab.network is None or not lab.namespaces or any(n not in present for n in lab.namespaces):
        raise LabError(f"no network-only lab in {labdir}: `hardway lab.up --network-only` makes one (or run "
                       "lab.up without --installed)")
    if lab.processes:
        raise LabError(f"the lab in {labdir} was started already; `hardway lab.down --lab-dir {labdir}` first")
    if lab.cluster != cluster.name:
        raise LabError(f"the lab in {labdir} is of cluster {lab.cluster}, not {cluster.name}")
    return lab


def _link_binaries(lab: Lab, found: dict[str, Path]) -> None:
    """<labdir>/bin: one symlink per binary, so units, probes and the workstation share one PATH."""
    shutil.rmtree(lab.bin_dir, ignore_errors=True)
    lab.bin_dir.mkdir(parents=True)
    for name, path in found.items():
        (lab.bin_dir / name).parent.mkdir(exist_ok=True)  # cni/<plugin>
        (lab.bin_dir / name).symlink_to(path)


def _extract(archive: Path, dest: Path) -> None:
    if not archive.is_file():
        raise LabError(f"{archive} is missing; `hardway bundle` should have written it")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    extract_bundle(archive, dest)


def _install(lab: Lab, out: Path, node: str) -> None:
    base = lab.labdir / node
    for sub in ("bundle", "root", "logs", "run", ".mnt"):
        shutil.rmtree(base / sub, ignore_errors=True)
    _extract(out / "bundles" / f"{node}.tar.gz", base / "bundle")
    script = base / "bundle" / node / "install.sh"
    proc = subprocess.run(["sh", str(script), "--root", str(lab.root(node))], capture_output=True, text=True)
    (base / "install.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LabError(f"{node}: `sh install.sh --root {lab.root(node)}` failed (exit {proc.returncode}):\n"
                       + procs.log_tail(base / "install.log"))


def _unpack_workstation(lab: Lab, out: Path) -> None:
    """The workstation bundle has no installer: its folder is used in place."""
    tmp = lab.labdir / ".workstation-bundle"
    _extract(out / "bundles" / f"{WORKSTATION}.tar.gz", tmp)
    shutil.rmtree(lab.workstation, ignore_errors=True)
    (tmp / WORKSTATION).rename(lab.workstation)
    shutil.rmtree(tmp)
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=lab.workstation, capture_output=True, text=True)
    if check.returncode != 0:
        raise LabError(f"the workstation bundle fails its SHA256SUMS:\n{check.stdout}{check.stderr}")


@dataclass(frozen=True)
class _Service:
    node: str
    unit: ServiceUnit
    stage: int


def _read_units(lab: Lab, plans: dict, overlays: list[wk.Overlay], say: Say) -> list[_Service]:
    """Every unit the lab runs, parsed from the installed unit files, in global start order; and
    each node's bind mounts (the directories its plan and units use)."""
    services = []
    for node, plan in plans.items():
        root = lab.root(node)
        paths = [f.path for f in plan.files] + [d.path for d in plan.directories] + ["/run"]
        if "kubelet.service" in plan.units:
            paths += list(wk.RUNTIME_DIRS)
        for unit_name in (u for u in plan.units if u not in DONE_BY_THE_LAB):
            unit_file = root / UNIT_DIR / unit_name
            try:
                unit = parse_unit(unit_file.read_text(), unit_name)
            except FileNotFoundError:
                raise LabError(f"{node}: unit {unit_name} is in the plan but install.sh did not install "
                               f"/{UNIT_DIR}/{unit_name}") from None
            except UnitError as e:
                raise LabError(f"{node}: {e}") from None
            paths += list(unit.directories)
            services.append(_Service(node, unit, STAGES.get(unit.binary, max(STAGES.values()) + 1)))
        binds = []
        for target in mount_roots(paths):
            if not Path("/" + target.split("/")[1]).exists():
                if "kubelet.service" in plan.units:
                    raise LabError(f"{node}: the lab needs /{target.split('/')[1]} on this machine to lay the worker's "
                                   f"{target} over it (e.g. `mkdir /{target.split('/')[1]}`)")
                continue  # e.g. /opt/cni of a controller+worker on a host without /opt: workers' only
            source = root / target.lstrip("/")
            if not source.exists():
                source.mkdir(parents=True, mode=0o755)  # e.g. /run, or a unit's RuntimeDirectory=
            binds.append([str(source), target])
        for o in overlays:  # after the directories they lie in
            if o.node == node:
                binds.append([str(_overlay_file(lab, node, o.path)), o.path])
        lab.binds[node] = binds
    lab.save()
    return sorted(services, key=lambda s: s.stage)  # stable: spec order, then plan order


def _overlay_file(lab: Lab, node: str, path: str) -> Path:
    return lab.labdir / node / "overlay" / path.lstrip("/")


def _is_worker(cluster: Cluster, node: str) -> bool:
    return any(n.name == node and n.is_worker for n in cluster.nodes)


def _cgroup_root(lab: Lab, node: str) -> str:
    return f"/{netns.lab_prefix(lab.labdir)}-{node}"


def _worker_overlays(lab: Lab, cluster: Cluster, say: Say) -> list[wk.Overlay]:
    """The lab-only deviations of each worker (workers.py says why), written beside the node's root
    and announced; and the shell lines that set up each worker's namespace."""
    mounts = wk.host_cgroup_mounts()
    # The lab runs every unit itself, systemd or not on this machine: the node has no systemd.
    v1, systemd = wk.cgroup_v1(mounts), False
    fakes = wk.kernel_setting_fakes()
    overlays: list[wk.Overlay] = []
    for node in (n.name for n in cluster.workers):
        kubelet = "/etc/kubernetes/kubelet-config.yaml"
        containerd = "/etc/containerd/config.toml"
        text = lab.on_host(node, kubelet).read_text()
        resolv = (yaml.safe_load(text) or {}).get("resolvConf") or "/etc/resolv.conf"
        copy = None
        if wk.resolver_in_run(resolv):
            copy = wk.RESOLV_COPY
            lab.on_host(node, copy).parent.mkdir(parents=True, exist_ok=True)
            lab.on_host(node, copy).write_text(Path(resolv).read_text())
        overlays.append(wk.kubelet_overlay(node, kubelet, text, _cgroup_root(lab, node), v1=v1, systemd=systemd,
                                           resolv_copy=copy))
        o = wk.containerd_overlay(node, containerd, lab.on_host(node, containerd).read_text(), systemd=systemd,
                                  lower_oom=wk.has_capability(wk.CAP_SYS_RESOURCE) and wk.in_initial_user_namespace())
        overlays += [o] if o else []
        for key, value in fakes.items():
            overlays.append(wk.Overlay(node, f"/proc/sys/{key}", value + "\n", (
                f"the kubelet sets the kernel-wide {key.replace('/', '.')} to {value}; the lab shows it that "
                f"value so it leaves this machine's setting as it is",)))
        lab.setup[node] = wk.cgroup_mount_lines(mounts, wk.unified_root())
    for o in overlays:
        path = _overlay_file(lab, o.node, o.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(o.content)
        note = f"lab overlay {o.describe()}"
        lab.notes.append(note)
        say(note)
    lab.save()
    return overlays


def _prepare_nodes(lab: Lab, cluster: Cluster, say: Say) -> None:
    """Before any unit starts: each worker's cgroup root, namespace holder, the bundle's sysctls and
    CNI plugins."""
    mounts = wk.host_cgroup_mounts()
    modules = sorted({m for n in cluster.workers for conf in (lab.root(n.name) / "etc/modules-load.d").glob("*.conf")
                      for m in wk.parse_modules_conf(conf.read_text())})
    absent = [m for m in modules if not wk.kernel_has(m)]
    if absent:
        raise LabError(f"the workers' bundles ask for the kernel modules {', '.join(absent)}, which this kernel "
                       f"does not offer; load them on this machine (`modprobe {' '.join(absent)}`) and run lab.up again")
    if modules:
        say(f"kernel: {', '.join(modules)} present, as the workers' /etc/modules-load.d asks (the lab loads none)")
    plugins = {p.name: p for p in sorted((lab.bin_dir / "cni").iterdir())} if cluster.workers else {}
    for node in (n.name for n in cluster.workers):
        root = _cgroup_root(lab, node)
        lab.cgroups.append(root)
        lab.save()
        wk.create_cgroup(root, mounts)
        base = lab.labdir / node
        lab.scratch_dir(node)
        holder = procs.start(node, HOLDER, lab.sandbox(node).command(["sleep", "infinity"]), lab.env(node),
                             base / "logs" / f"{HOLDER}.log", base / "run" / f"{HOLDER}.pid", -1)
        lab.processes.append(holder)
        lab.save()
        _wait_holder(lab, holder)
        for conf in sorted((lab.root(node) / "etc/sysctl.d").glob("*.conf")):
            for key, value in wk.parse_sysctl_conf(conf.read_text()):
                if not wk.per_netns(key):
                    raise LabError(f"{node}: /etc/sysctl.d/{conf.name} sets {key}, which is not per network "
                                   f"namespace: the lab will not change it on this machine")
                _node_run(lab, node, ["sh", "-c", 'echo "$1" > "/proc/sys/$2"', "sh", value, key.replace(".", "/")])
        cni = lab.root(node) / "opt/cni/bin"
        cni.mkdir(parents=True, exist_ok=True)
        for name, path in plugins.items():
            (cni / name).unlink(missing_ok=True)
            (cni / name).symlink_to(path)
        say(f"{node}: namespace ready (cgroup root {root}, sysctls from its bundle, CNI plugins {', '.join(sorted(plugins))})")


def _add_routes(lab: Lab, plans: dict, say: Say) -> None:
    """The README's step after the workers: every node's pod routes, from the same plan notes that its
    INSTALL.md and the workstation's routes.sh print (not derived again here)."""
    member = {m.node: m for m in lab.network.members}
    for node, plan in plans.items():
        for r in plan.notes.routes:
            netns._ip("-n", member[node].netns, "route", "replace", str(r["cidr"]), "via", str(r["via"]))
        if plan.notes.routes:
            say(f"{node}: {len(plan.notes.routes)} pod route(s), as its INSTALL.md says")


def _wait_holder(lab: Lab, holder: Process, timeout: float = 10.0) -> None:
    """A holder is ready once its mounts are done: its namespace then holds the node's /etc/hosts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(holder):
            raise LabError(f"{holder.node}: the node's namespace could not be set up; the end of {holder.log}:\n"
                           + procs.log_tail(holder.log))
        check = subprocess.run(lab.command(holder.node, ["cat", "/proc/sys/kernel/hostname"]), capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == holder.node:
            return
        time.sleep(0.1)
    raise LabError(f"{holder.node}: the node's namespace was not ready within {timeout:.0f}s")


def _node_run(lab: Lab, node: str, argv: list[str], timeout: float = 60) -> str:
    proc = lab.run(node, argv, timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"{node}: `{' '.join(argv)}` failed (exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[-1500:]}")
    return proc.stdout


def _apply_manifests(lab: Lab, say: Say) -> None:
    """The workstation README's step once the API answers: apply the manifests with super-admin."""
    say("applying the workstation manifests with super-admin")
    kubeconfig = lab.workstation / "super-admin.kubeconfig"
    _node_run(lab, WORKSTATION, ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", str(lab.workstation / "manifests")])


def _import_images(lab: Lab, cluster: Cluster, say: Say) -> None:
    """No registry is reachable: the images the bundles name are built here and imported into every
    worker's containerd under exactly those names. Nothing is pulled."""
    from .images import busybox_image, coredns_image, import_argv, pause_image, write_oci_archive
    found = {name: lab.bin_dir / name for name in ("pause", "coredns", "busybox")}
    pause = {wk.pause_ref(lab.on_host(n.name, "/etc/containerd/config.toml").read_text()) for n in cluster.workers}
    coredns = [i for i in wk.manifest_images((lab.workstation / "manifests/10-coredns.yaml").read_text())]
    images = ([pause_image(found["pause"], ref) for ref in sorted(pause)]
              + [coredns_image(found["coredns"], ref) for ref in coredns]
              + [busybox_image(found["busybox"], wk.TEST_IMAGE)])
    archive = lab.labdir / "images.tar"
    write_oci_archive(images, archive)
    names = ", ".join(i.name for i in images)
    for node in (n.name for n in cluster.workers):
        _node_run(lab, node, import_argv(lab.bin_dir / "ctr", archive), timeout=120)
        say(f"{node}: imported {names}")


def _worker_probes(lab: Lab, cluster: Cluster) -> list[Probe]:
    kubectl = str(lab.bin_dir / "kubectl")
    kc = str(lab.workstation / "admin.kubeconfig")
    home = (("HOME", str(lab.labdir / ".home")),)  # kubectl's discovery cache stays in the lab
    probes = [Probe(WORKSTATION, f"node {n.name} Ready", "", argv=(
        kubectl, f"--kubeconfig={kc}", "--request-timeout=5s", "get", "node", n.name, "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}'), expect="True", env=home) for n in cluster.workers]
    probes.append(Probe(WORKSTATION, "CoreDNS Available", "", argv=(
        kubectl, f"--kubeconfig={kc}", "--request-timeout=5s", "-n", "kube-system", "get", "deployment", "coredns",
        "-o", 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), expect="True", env=home))
    return probes


def _hosts_lines(entries) -> list[str]:
    """The plan's hosts notes as /etc/hosts lines, without blanks and comments."""
    lines = [e.strip() for e in entries]
    return [l for l in lines if l and not l.startswith("#")]


def _write_hosts(lab: Lab, cluster: Cluster, ws_plan, plans: dict) -> None:
    notes = ws_plan.notes.hosts or next((p.notes.hosts for p in plans.values() if p.notes.hosts), ())
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"] + _hosts_lines(notes)
    known = {name for line in lines for name in line.split()[1:]}
    for node in cluster.nodes:  # the plan's lines should hold them all; never leave one out
        missing = [n for n in node.hostnames if n not in known]
        if missing:
            lines.append(" ".join([str(node.address), *missing]))
            known.update(missing)
    endpoint = cluster.api_endpoint
    if not is_ip(endpoint) and endpoint not in known:
        target = (cluster.loadbalancers or cluster.controllers)[0].address
        lines.append(f"{target} {endpoint}")
    lab.hosts_file.write_text("\n".join(lines) + "\n")



def _write_workstation_script(lab: Lab) -> None:
    """<labdir>/workstation.sh CMD...: run a client in the lab's workstation namespace."""
    import shlex
    sandbox = lab.sandbox(WORKSTATION)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in lab.env(WORKSTATION).items())
    script = (
        "#!/bin/sh\n"
        f"# Run a command in the workstation namespace of the {lab.cluster} lab, with the lab's\n"
        "# /etc/hosts, its kubectl and etcdctl on PATH and KUBECONFIG=workstation/admin.kubeconfig.\n"
        f"#   sh {lab.labdir / WS_SCRIPT} kubectl get --raw /readyz\n"
        "set -eu\n"
        "[ $# -gt 0 ] || { echo \"usage: $0 COMMAND [ARG...]\" >&2; exit 2; }\n"
        f"mkdir -p {shlex.quote(str(sandbox.scratch))}\n"
        f"exec env -i {env} {shlex.join(sandbox.command([]))} \"$@\"\n"
    )
    path = lab.labdir / WS_SCRIPT
    path.write_text(script)
    path.chmod(0o755)


def _argv(lab: Lab, node: str, argv: tuple[str, ...]) -> list[str]:
    """The unit's command with its program taken from the lab's binaries when we have it."""
    name = argv[0].rsplit("/", 1)[-1]
    if (lab.bin_dir / name).exists():
        return [str(lab.bin_dir / name), *argv[1:]]
    if os.access(argv[0], os.X_OK):
        return list(argv)
    raise LabError(f"{node}: cannot run {argv[0]}: neither a lab binary ({', '.join(LAB_BINARIES)}) nor "
                   f"installed on this machine")


def _global_maxconn(config: str) -> int | None:
    section = None
    for line in config.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not line[0].isspace():
            section = words[0]
        elif section == "global" and words[0] == "maxconn" and len(words) > 1 and words[1].isdigit():
            return int(words[1])
    return None


def _fit_haproxy(lab: Lab, node: str, argv: list[str]) -> list[str]:
    """HAProxy refuses to start when its global maxconn needs more file descriptors (two per
    connection, plus a few) than the hard limit allows. On a real node systemd's default hard limit
    (524288) is plenty; a container may cap it lower. Then, and only then, the lab lowers maxconn
    with HAProxy's own `-n` flag, and says so."""
    if "-f" not in argv[:-1]:
        return argv
    config = lab.on_host(node, argv[argv.index("-f") + 1])
    maxconn = _global_maxconn(config.read_text()) if config.is_file() else None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if maxconn is None or hard == resource.RLIM_INFINITY or 2 * maxconn + 100 <= hard:
        return argv
    lowered = (hard - 100) // 2
    lab.notes.append(f"{node}/haproxy: maxconn {maxconn} needs {2 * maxconn + 100} open files but this machine's "
                     f"hard limit is {hard}; the lab runs HAProxy with -n {lowered}")
    lab.save()
    return [argv[0], "-n", str(lowered), *argv[1:]]


def _start(lab: Lab, cluster: Cluster, services: list[_Service], plans: dict, timeout: float, say: Say) -> None:
    pending: list[tuple[int, Process, Probe]] = []  # (the stage after which to wait, process, probe)
    for stage in sorted({s.stage for s in services} | {CONTROL_PLANE_STAGE, MANIFESTS_STAGE, IMAGES_STAGE, ROUTES_STAGE}):
        if stage == MANIFESTS_STAGE:
            _apply_manifests(lab, say)
        if stage == IMAGES_STAGE and cluster.workers:
            _import_images(lab, cluster, say)
        if stage == ROUTES_STAGE:
            _add_routes(lab, plans, say)
        batch = [s for s in services if s.stage == stage]
        for s in batch:
            base = lab.labdir / s.node
            unit_stem = s.unit.name.removesuffix(".service")
            log = base / "logs" / f"{unit_stem}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            lab.scratch_dir(s.node)
            for may_fail, pre in s.unit.pre:  # ExecStartPre=, e.g. HAProxy's configuration check
                if may_fail and not _runnable(lab, pre[0]):
                    note = f"{s.node}/{s.unit.name}: skipped `-{' '.join(pre)}` ({pre[0]} is not on this machine; systemd ignores its failure too)"
                    lab.notes.append(note)
                    say(note)
                    continue
                check = subprocess.run(lab.command(s.node, _argv(lab, s.node, pre), s.unit.working_directory),
                                       capture_output=True, text=True, env=lab.env(s.node, s.unit.environment),
                                       timeout=60)
                with open(log, "a") as f:
                    f.write(f"--- ExecStartPre {' '.join(pre)}: exit {check.returncode}\n{check.stdout}{check.stderr}")
                if check.returncode != 0 and not may_fail:
                    raise LabError(f"{s.node}/{s.unit.name}: ExecStartPre `{' '.join(pre)}` failed "
                                   f"(exit {check.returncode}):\n{(check.stdout + check.stderr).strip()[-2000:]}")
            argv = _argv(lab, s.node, s.unit.argv)
            if s.unit.type == "oneshot":  # runs to completion, like systemd's Type=oneshot
                say(f"running {s.node}/{s.unit.name}")
                done = subprocess.run(lab.command(s.node, argv, s.unit.working_directory), capture_output=True,
                                      text=True, env=lab.env(s.node, s.unit.environment), timeout=60)
                with open(log, "a") as f:
                    f.write(f"--- ExecStart {' '.join(s.unit.argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
                if done.returncode != 0:
                    raise LabError(f"{s.node}/{s.unit.name}: `{' '.join(s.unit.argv)}` failed (exit {done.returncode}):\n"
                                   f"{(done.stdout + done.stderr).strip()[-2000:]}")
                continue
            if s.unit.binary == "haproxy":
                argv = _fit_haproxy(lab, s.node, argv)
            say(f"starting {s.node}/{s.unit.name}")
            proc = procs.start(s.node, s.unit.name, lab.command(s.node, argv, s.unit.working_directory),
                               lab.env(s.node, s.unit.environment),
                               log, base / "run" / f"{unit_stem}.pid", s.stage)
            lab.processes.append(proc)
            lab.save()
            if s.unit.binary == "haproxy":  # it answers once the API servers behind it do
                ca = lab.workstation / "ca.crt"
                pending.append((max(stage, CONTROL_PLANE_STAGE), proc, loadbalancer_probe(
                    WORKSTATION, str(ca), str(cluster.node(s.node).address), cluster.api_port)))
            else:
                probe = probe_for(s.node, s.unit, host_path(lab.root(s.node))) or _worker_probe(lab, s)
                if probe:
                    pending.append((stage, proc, probe))
        for item in [p for p in pending if p[0] <= stage]:
            pending.remove(item)
            _, proc, probe = item
            lab.probes.append(probe)
            lab.save()
            _wait_ready(lab, proc, probe, timeout, say)
    if cluster.workers:
        for probe in _worker_probes(lab, cluster):
            lab.probes.append(probe)
            lab.save()
            kubelets = [p for p in lab.processes if p.unit == "kubelet.service"]
            _wait_ready(lab, kubelets, probe, timeout, say)


def _worker_probe(lab: Lab, s: _Service) -> Probe | None:
    """Readiness of a worker's long-running units, from inside the node."""
    if s.unit.binary == "containerd":
        config = s.unit.flags().get("config") or "/etc/containerd/config.toml"
        m = re.search(r'^\s*address\s*=\s*"([^"]+)"', lab.on_host(s.node, config).read_text(), re.M)
        socket = m.group(1) if m else "/run/containerd/containerd.sock"
        return Probe(s.node, f"containerd answers on {socket}", "",
                     argv=(str(lab.bin_dir / "ctr"), f"--address={socket}", "version"), expect="Server")
    if s.unit.binary == "kubelet":  # the kubelet's local health port (healthzPort, default 10248)
        return Probe(s.node, "kubelet /healthz at 127.0.0.1:10248", "http://127.0.0.1:10248/healthz", expect="ok")
    if s.unit.binary == "kube-proxy":  # healthzBindAddress, default 0.0.0.0:10256
        return Probe(s.node, "kube-proxy /healthz at 127.0.0.1:10256", "http://127.0.0.1:10256/healthz")
    return None


def _runnable(lab: Lab, program: str) -> bool:
    return (lab.bin_dir / program.rsplit("/", 1)[-1]).exists() or os.access(program, os.X_OK)


def _wait_ready(lab: Lab, proc: Process | list[Process], probe: Probe, timeout: float, say: Say) -> None:
    started = time.monotonic()
    answer = ""
    watched = proc if isinstance(proc, list) else [proc]
    proc = watched[0] if watched else None
    while True:
        for p in watched:
            if not procs.alive(p):
                raise LabError(f"{p.node}/{p.unit} exited while starting; the end of {p.log}:\n"
                               + procs.log_tail(p.log))
        ok, answer = lab.probe(probe)
        if ok:
            say(f"  ready after {time.monotonic() - started:.1f}s: {probe.what}")
            return
        if time.monotonic() - started > timeout:
            raise LabError(f"{probe.what}: not ready after {timeout:.0f}s (last answer: {answer}); the end of "
                           f"{proc.log}:\n" + procs.log_tail(proc.log))
        time.sleep(1.0)


# ---------------------------------------------------------------- status, down ------------------

@dataclass(frozen=True)
class ProcessStatus:
    process: Process
    alive: bool


def status(labdir: Path) -> tuple[Lab, list[ProcessStatus], list[tuple[Probe, bool, str]]]:
    lab = Lab.load(labdir)
    rows = [ProcessStatus(p, procs.alive(p)) for p in lab.processes]
    missing = [n for n in lab.namespaces if n not in set(netns.existing_namespaces())]
    if missing:
        raise LabError(f"the lab in {lab.labdir} is broken: namespaces {', '.join(missing)} are gone; "
                       f"`hardway lab.down --lab-dir {lab.labdir}` cleans up the rest")
    checks = lab.check() if lab.network else []
    return lab, rows, checks


def down(labdir: Path, say: Say = _quiet) -> list[str]:
    """Stop every process and delete every namespace of the lab in `labdir`. Returns what it did."""
    labdir = Path(labdir).absolute()
    done: list[str] = []
    try:
        lab = Lab.load(labdir)
    except LabError:
        lab = None
    if lab is not None:
        for stage in sorted({p.stage for p in lab.processes}, reverse=True):
            batch = [p for p in lab.processes if p.stage == stage and procs.alive(p)]
            for p in batch:
                say(f"stopping {p.node}/{p.unit} (pid {p.pid})")
                done.append(f"stopped {p.node}/{p.unit} (pid {p.pid})")
            done += procs.stop(batch)
        for p in lab.processes:
            Path(p.pid_file).unlink(missing_ok=True)
    # Whatever still runs inside the lab's namespaces was started by the lab (probes, strays).
    names = [n for n in (lab.namespaces if lab else []) if n.startswith(netns.lab_prefix(labdir) + "-")]
    names += [n for n in netns.existing_namespaces(netns.lab_prefix(labdir)) if n not in names]
    present = set(netns.existing_namespaces())
    for name in names:
        if name in present:
            pids = netns.namespace_pids(name)
            if pids:
                done.append(f"stopped {len(pids)} more process(es) in namespace {name}")
                procs.kill_pids(pids)
    # Containers live in pod namespaces, not the node's: the kubelets' cgroup roots hold them all.
    mounts = wk.host_cgroup_mounts()
    prefix = netns.lab_prefix(labdir)
    roots = [r for r in (lab.cgroups if lab else []) if wk.lab_cgroup(r, prefix)]  # lab.json is only a file
    roots += [f"/{d.name}" for m in mounts for d in Path(m.path).glob(f"{prefix}-*")
              if d.is_dir() and f"/{d.name}" not in roots]
    for root in dict.fromkeys(roots):
        for line in wk.remove_cgroup(root, mounts):
            say(line)
            done.append(line)
    for name in netns.destroy(names):
        say(f"deleted namespace {name}")
        done.append(f"deleted namespace {name}")
    (labdir / STATE).unlink(missing_ok=True)
    return done
