"""Workers in the lab: what a worker needs beyond a controller, and the deviations this machine forces.

A worker's units (containerd, kubelet, kube-proxy, pod-nat) share one mount and UTS namespace, as
on a machine: the kubelet mounts pod volumes that containerd's runc must see. So each worker gets a
holder process whose namespaces every unit, probe and client of that node joins (`nsenter`).

The bundles are what a real systemd / cgroup v2 node needs. Where this machine differs (cgroup v1,
no systemd as PID 1, several kubelets sharing one kernel), the lab lays a *visible overlay* over the
installed file inside the node's mount namespace: a copy with the change, kept in
`<labdir>/<node>/overlay/`, bind-mounted over the path. The installed file stays as install.sh
wrote it, and `lab.up` prints every overlay with its reason (docs/lab.md lists them).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .netns import LabError

# The busybox test image: how a user tries workloads in the lab (docs/lab.md).
TEST_IMAGE = "hardway.local/busybox:lab"

# Directories a worker's components create on a real node (not in the bundle, so not in the plan):
# containerd's root, host-local IPAM's leases, the kubelet's container logs. Each is kept in the
# node's root, never on the host.
RUNTIME_DIRS = ("/var/lib/containerd", "/var/lib/cni", "/var/log/pods", "/var/log/containers")

# Kernel settings the kubelet writes at start when they differ (pkg/kubelet/cm, setupKernelTunables).
# They are global to the kernel, not per network namespace: a lab kubelet would change the host's.
KUBELET_KERNEL_SETTINGS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Overlay:
    """One lab-only deviation: `content` replaces the node file `path` inside the node's namespace."""
    node: str
    path: str
    content: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.node}: {self.path}: " + "; ".join(self.reasons)


# ---------------------------------------------------------------- what this machine is -----------

@dataclass(frozen=True)
class CgroupMount:
    path: str  # /sys/fs/cgroup/cpu
    fstype: str  # cgroup | cgroup2
    options: str  # the hierarchy's super options: "cpu", "name=systemd", ""


def host_cgroup_mounts(mountinfo: str | None = None) -> list[CgroupMount]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup on this machine."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        path, fstype = fields[4], tail[0]
        if fstype not in ("cgroup", "cgroup2") or not (path == CGROUP_ROOT or path.startswith(CGROUP_ROOT + "/")):
            continue
        opts = ",".join(o for o in tail[2].split(",") if o not in ("rw", "ro"))
        mounts.append(CgroupMount(path, fstype, opts))
    return mounts


def cgroup_v1(mounts: list[CgroupMount]) -> bool:
    """Whether controllers live in v1 hierarchies (a v2 tree at /sys/fs/cgroup/unified does not count)."""
    return any(m.fstype == "cgroup" and m.options and not m.options.startswith("name=") for m in mounts)


def cgroup_mount_lines(mounts: list[CgroupMount], unified_root: bool) -> list[str]:
    """Shell lines that mount the host's cgroup hierarchies again inside a node's namespace:
    `ip netns exec` gives the namespace a fresh /sys (so /sys/class/net shows the node's
    interfaces), which leaves /sys/fs/cgroup empty, and the kubelet and runc need it."""
    q = shlex.quote
    if unified_root:
        return [f"mount -t cgroup2 cgroup2 {CGROUP_ROOT}"]
    lines = [f"mount -t tmpfs -o mode=0755 cgroup {CGROUP_ROOT}"]
    for m in mounts:
        lines.append(f"mkdir -p {q(m.path)}")
        opts = f" -o {q(m.options)}" if m.options else ""
        lines.append(f"mount -t {m.fstype}{opts} {m.fstype} {q(m.path)}")
    return lines


def unified_root() -> bool:
    """Whether /sys/fs/cgroup itself is a cgroup v2 tree (then there is nothing else to mount)."""
    return Path(CGROUP_ROOT, "cgroup.controllers").exists()


# ---------------------------------------------------------------- overlays (pure) ---------------

RESOLV_COPY = "/var/lib/kubelet/hardway-lab-resolv.conf"  # in the node's own root


def resolver_in_run(path: str) -> bool:
    """Whether a resolver file (e.g. /etc/resolv.conf, a link to systemd-resolved's or resolvconf's
    file) lives under /run, which every lab node replaces with its own."""
    return Path(path).resolve().is_relative_to("/run")


def kubelet_overlay(node: str, path: str, text: str, cgroup_root: str, *, v1: bool, systemd: bool,
                    resolv_copy: str | None = None) -> Overlay:
    """The kubelet's configuration as this machine needs it."""
    config = yaml.safe_load(text)
    if not isinstance(config, dict) or config.get("kind") != "KubeletConfiguration":
        raise LabError(f"{node}: {path} is not a KubeletConfiguration")
    reasons = []
    if resolv_copy:
        reasons.append(f"resolvConf: {resolv_copy} (a copy of this machine's {config.get('resolvConf')}, which "
                       "lives under /run, and every lab node has a /run of its own)")
        config["resolvConf"] = resolv_copy
    if not systemd and config.get("cgroupDriver") == "systemd":
        config["cgroupDriver"] = "cgroupfs"
        reasons.append("cgroupDriver: cgroupfs (the lab runs the units itself: no systemd manages the node's cgroups)")
    if v1:
        config["failCgroupV1"] = False
        reasons.append("failCgroupV1: false (this machine has cgroup v1; the kubelet refuses it by default)")
    config["cgroupRoot"] = cgroup_root
    reasons.append(f"cgroupRoot: {cgroup_root} (several kubelets share this kernel's cgroups; "
                   "each keeps its pods under its own root, which lab.down removes)")
    return Overlay(node, path, yaml.safe_dump(config, sort_keys=False), tuple(reasons))


_SYSTEMD_CGROUP = re.compile(r"^([ \t]*SystemdCgroup[ \t]*=[ \t]*)true[ \t]*$", re.M)


def containerd_overlay(node: str, path: str, text: str, *, systemd: bool, lower_oom: bool) -> Overlay | None:
    """containerd's configuration as this machine needs it (None when it needs nothing)."""
    reasons = []
    if not systemd:
        text, n = _SYSTEMD_CGROUP.subn(r"\g<1>false", text)
        if n != 1:
            raise LabError(f"{node}: {path} has no `SystemdCgroup = true` line for the lab to turn off")
        reasons.append("SystemdCgroup = false (runc with cgroupfs, like the kubelet: no systemd manages the lab's units)")
    if not lower_oom:
        # TOML allows a table to be defined after its sub-tables; the bundle never defines this one.
        if re.search(r'^\[plugins\."io\.containerd\.cri\.v1\.runtime"\]\s*$', text, re.M):
            raise LabError(f"{node}: {path} already has a [plugins.\"io.containerd.cri.v1.runtime\"] table")
        text = text.rstrip("\n") + ('\n\n# hardway lab overlay\n[plugins."io.containerd.cri.v1.runtime"]\n'
                                   '  restrict_oom_score_adj = true\n')
        reasons.append("restrict_oom_score_adj = true (root here lacks CAP_SYS_RESOURCE, so no process may lower an "
                       "OOM score; containerd keeps each container's at or above its own instead of failing to start it)")
    return Overlay(node, path, text, tuple(reasons)) if reasons else None


CAP_SYS_RESOURCE = 24


def in_initial_user_namespace(uid_map: str | None = None) -> bool:
    """A capability counts on the machine only outside a user namespace (or in one mapping all ids)."""
    text = uid_map if uid_map is not None else Path("/proc/self/uid_map").read_text()
    return text.split() == ["0", "0", "4294967295"]


def has_capability(bit: int, status: str | None = None) -> bool:
    """Whether this process holds a capability (effective set of /proc/self/status)."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def kernel_setting_fakes(read=lambda key: Path("/proc/sys", key).read_text().strip()) -> dict[str, str]:
    """The kubelet's global kernel settings that differ on this host: {key: the value it wants}."""
    fakes = {}
    for key, wanted in KUBELET_KERNEL_SETTINGS.items():
        try:
            current = read(key)
        except OSError:
            continue
        if current != wanted:
            fakes[key] = wanted
    return fakes


def parse_modules_conf(text: str) -> list[str]:
    """Module names of a modules-load.d file."""
    return [line.split()[0] for line in text.splitlines() if line.strip() and line.strip()[0] not in "#;"]


def kernel_has(module: str, filesystems: str | None = None, exists=os.path.exists) -> bool:
    """Whether the running kernel offers what `module` provides, built in or loaded: the lab never
    loads a module itself (that would change the host)."""
    if module == "overlay":
        text = filesystems if filesystems is not None else Path("/proc/filesystems").read_text()
        return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())
    if module == "br_netfilter":  # built in, it has no /sys/module entry; its sysctls tell
        return exists("/proc/sys/net/bridge/bridge-nf-call-iptables")
    return exists(f"/sys/module/{module}")


def parse_sysctl_conf(text: str) -> list[tuple[str, str]]:
    """`key = value` lines of a sysctl.d file, in order."""
    settings = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise LabError(f"cannot read the sysctl line {line!r}")
        settings.append((key.strip().lstrip("-"), value.strip()))
    return settings


def per_netns(key: str) -> bool:
    """Settings the lab may apply inside a node's network namespace without touching the host."""
    return key.startswith(("net.ipv4.", "net.ipv6.", "net.bridge.", "net.netfilter.nf_conntrack_tcp"))


_PAUSE = re.compile(r'^\s*sandbox\s*=\s*"([^"]+)"', re.M)
_IMAGE = re.compile(r"^\s*image:\s*[\"']?([^\s\"']+)", re.M)


def pause_ref(containerd_config: str) -> str:
    m = _PAUSE.search(containerd_config)
    if not m:
        raise LabError("containerd's config pins no sandbox (pause) image")
    return m.group(1)


def manifest_images(manifest: str) -> list[str]:
    return list(dict.fromkeys(_IMAGE.findall(manifest)))


# ---------------------------------------------------------------- cgroups (side effects) --------

def lab_cgroup(name: str, prefix: str) -> bool:
    """Whether `name` is one of a lab's kubelet cgroup roots (`/<prefix>-<node>`): down trusts
    nothing else it reads from lab.json with a kill."""
    rest = name.removeprefix(f"/{prefix}-")
    return rest != name and bool(rest) and "/" not in rest and rest not in (".", "..")


def cgroup_dirs(name: str, mounts: list[CgroupMount]) -> list[Path]:
    return [Path(m.path) / name.lstrip("/") for m in mounts]


def create_cgroup(name: str, mounts: list[CgroupMount]) -> None:
    """Create the kubelet's cgroupRoot in every hierarchy (the kubelet requires it to exist)."""
    for m, d in zip(mounts, cgroup_dirs(name, mounts)):
        d.mkdir(exist_ok=True)
        if m.fstype != "cgroup":
            continue
        for f in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset child starts empty: inherit
            if (d / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((d.parent / f).read_text())


def cgroup_pids(name: str, mounts: list[CgroupMount]) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(name, mounts):
        if d.is_dir():
            for procs in d.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    return pids


def remove_cgroup(name: str, mounts: list[CgroupMount], grace: float = 10.0) -> list[str]:
    """Kill every process left in the cgroup tree (containers, their shims' children), then remove
    the tree, deepest first. Returns what it did."""
    done = []
    pids = cgroup_pids(name, mounts)
    if pids:
        done.append(f"stopped {len(pids)} container process(es) in cgroup {name}")
        for sig in (signal.SIGKILL,):  # the kubelet that would stop them gracefully is gone
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        # Gone from the cgroup, then gone altogether: orphans are reaped by the host's init.
        while (cgroup_pids(name, mounts) or any(Path(f"/proc/{p}").exists() for p in pids)) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    removed = 0
    for d in cgroup_dirs(name, mounts):
        if not d.is_dir():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [d]:
            for _ in range(50):
                try:
                    sub.rmdir()
                    removed += 1
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # a process still exiting
    if removed:
        done.append(f"removed cgroup {name}")
    return done
