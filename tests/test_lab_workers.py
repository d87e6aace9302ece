"""The lab's worker pieces that need no root: overlays, cgroup mount discovery, sysctl and image
references read from the rendered files (never from hardway's own constants)."""

from __future__ import annotations

import pytest
import yaml

from hardway import resources, spec
from hardway.lab import workers as wk
from hardway.lab.netns import LabError
from hardway.pki import generate_materials
from hardway.render import node_plan

MOUNTINFO = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
33 31 0:28 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
34 31 0:29 / /sys/fs/cgroup/systemd rw,relatime shared:11 - cgroup cgroup rw,name=systemd
35 31 0:30 / /sys/fs/cgroup/unified rw,relatime shared:12 - cgroup2 cgroup2 rw
36 30 0:31 / /mnt/cgroup-elsewhere rw,relatime - cgroup cgroup rw,pids
"""


@pytest.fixture(scope="module")
def kthw_worker_files():
    cluster = spec.load(resources.example_path("kthw"))
    plan = node_plan(cluster, generate_materials(cluster), cluster.workers[0].name)
    return {f.path: f.data.decode() if isinstance(f.data, bytes) else f.data for f in plan.files}, cluster


def test_cgroup_mounts_are_read_from_mountinfo_under_sys_fs_cgroup_only():
    mounts = wk.host_cgroup_mounts(MOUNTINFO)
    assert [(m.path, m.fstype, m.options) for m in mounts] == [
        ("/sys/fs/cgroup/cpu", "cgroup", "cpu"), ("/sys/fs/cgroup/memory", "cgroup", "memory"),
        ("/sys/fs/cgroup/systemd", "cgroup", "name=systemd"), ("/sys/fs/cgroup/unified", "cgroup2", "")]
    assert wk.cgroup_v1(mounts)
    # A pure v2 machine (only the unified tree, or only a named v1 hierarchy) is not v1.
    assert not wk.cgroup_v1([m for m in mounts if m.fstype == "cgroup2" or m.options.startswith("name=")])
    lines = wk.cgroup_mount_lines(mounts, unified_root=False)
    assert lines[0].startswith("mount -t tmpfs")
    assert "mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu" in lines
    assert "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified" in lines
    assert wk.cgroup_mount_lines(mounts, unified_root=True) == ["mount -t cgroup2 cgroup2 /sys/fs/cgroup"]


def test_kubelet_overlay_changes_only_what_this_machine_forces(kthw_worker_files):
    files, _ = kthw_worker_files
    path = "/etc/kubernetes/kubelet-config.yaml"
    original = yaml.safe_load(files[path])
    assert original["cgroupDriver"] == "systemd", "the bundle is for a systemd node"
    o = wk.kubelet_overlay("node-0", path, files[path], "/hwx-node-0", v1=True, systemd=False)
    new = yaml.safe_load(o.content)
    assert new["cgroupDriver"] == "cgroupfs" and new["failCgroupV1"] is False and new["cgroupRoot"] == "/hwx-node-0"
    changed = {k for k in set(new) | set(original) if new.get(k) != original.get(k)}
    assert changed == {"cgroupDriver", "failCgroupV1", "cgroupRoot"}
    assert len(o.reasons) == 3 and all(o.reasons)
    # On a systemd, cgroup v2 machine only the per-kubelet cgroup root remains.
    o2 = wk.kubelet_overlay("node-0", path, files[path], "/r", v1=False, systemd=True)
    new2 = yaml.safe_load(o2.content)
    assert new2["cgroupDriver"] == "systemd" and "failCgroupV1" not in new2 and len(o2.reasons) == 1
    with pytest.raises(LabError):
        wk.kubelet_overlay("node-0", path, "kind: Other\n", "/r", v1=True, systemd=False)


def test_containerd_overlay_turns_off_the_systemd_cgroup_driver_and_nothing_else(kthw_worker_files):
    files, _ = kthw_worker_files
    path = "/etc/containerd/config.toml"
    o = wk.containerd_overlay("node-0", path, files[path], systemd=False, lower_oom=True)
    before, after = files[path].splitlines(), o.content.splitlines()
    diff = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(diff) == 1
    assert diff[0][0].strip() == "SystemdCgroup = true" and diff[0][1].strip() == "SystemdCgroup = false"
    assert wk.containerd_overlay("node-0", path, files[path], systemd=True, lower_oom=True) is None
    with pytest.raises(LabError):
        wk.containerd_overlay("node-0", path, "version = 3\n", systemd=False, lower_oom=True)


def test_containerd_overlay_restricts_oom_scores_only_without_cap_sys_resource(kthw_worker_files):
    tomllib = pytest.importorskip("tomllib")
    files, _ = kthw_worker_files
    path = "/etc/containerd/config.toml"
    o = wk.containerd_overlay("node-0", path, files[path], systemd=True, lower_oom=False)
    config = tomllib.loads(o.content)  # still valid TOML, the bundle's tables intact
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["containerd"]["default_runtime_name"] == tomllib.loads(files[path])["plugins"][
        "io.containerd.cri.v1.runtime"]["containerd"]["default_runtime_name"]
    assert len(o.reasons) == 1 and "CAP_SYS_RESOURCE" in o.reasons[0]
    both = wk.containerd_overlay("node-0", path, files[path], systemd=False, lower_oom=False)
    assert len(both.reasons) == 2


def test_capabilities_are_read_from_the_effective_set():
    status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n"
    assert not wk.has_capability(wk.CAP_SYS_RESOURCE, status)
    assert wk.has_capability(21, status)  # CAP_SYS_ADMIN
    assert wk.has_capability(wk.CAP_SYS_RESOURCE, "CapEff:\t000001ffffffffff\n")


def test_kernel_setting_fakes_only_where_the_host_differs():
    host = {"vm/overcommit_memory": "0", "vm/panic_on_oom": "0", "kernel/panic": "10",
            "kernel/panic_on_oops": "0", "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "1"}
    fakes = wk.kernel_setting_fakes(lambda key: host[key])
    assert fakes == {"vm/overcommit_memory": "1", "kernel/panic_on_oops": "1", "kernel/keys/root_maxbytes": "25000000"}

    def missing(key):
        raise FileNotFoundError(key)
    assert wk.kernel_setting_fakes(missing) == {}


def test_bundle_sysctls_are_all_per_network_namespace(kthw_worker_files):
    files, _ = kthw_worker_files
    settings = wk.parse_sysctl_conf(files["/etc/sysctl.d/90-kubernetes.conf"])
    assert ("net.ipv4.ip_forward", "1") in settings
    assert all(wk.per_netns(k) for k, _ in settings)
    assert not wk.per_netns("vm.overcommit_memory") and not wk.per_netns("kernel.panic")
    with pytest.raises(LabError):
        wk.parse_sysctl_conf("net.ipv4.ip_forward 1\n")


def test_image_references_come_from_the_rendered_files(kthw_worker_files):
    files, cluster = kthw_worker_files
    versions = yaml.safe_load((resources.data_dir("units") / "versions.yaml").read_text())
    row = versions[f"{cluster.version.major}.{cluster.version.minor}"]
    assert wk.pause_ref(files["/etc/containerd/config.toml"]) == f"registry.k8s.io/pause:{row['pause']}"
    manifest = "spec:\n  containers:\n    - name: c\n      image: registry.k8s.io/coredns/coredns:v1.2.3\n" \
               "    - name: d\n      image: \"example.org/x:1\"\n    - image: registry.k8s.io/coredns/coredns:v1.2.3\n"
    assert wk.manifest_images(manifest) == ["registry.k8s.io/coredns/coredns:v1.2.3", "example.org/x:1"]
    with pytest.raises(LabError):
        wk.pause_ref("version = 3\n")


def test_kernel_features_are_recognised_built_in_or_loaded(kthw_worker_files):
    files, _ = kthw_worker_files
    modules = wk.parse_modules_conf(files["/etc/modules-load.d/kubernetes.conf"])
    assert modules == ["overlay", "br_netfilter"]
    assert wk.kernel_has("overlay", "nodev\ttmpfs\nnodev\toverlay\n")
    assert not wk.kernel_has("overlay", "nodev\ttmpfs\nnodev\toverlayfs-not\n")
    assert wk.kernel_has("br_netfilter", exists=lambda p: p == "/proc/sys/net/bridge/bridge-nf-call-iptables")
    assert not wk.kernel_has("br_netfilter", exists=lambda p: False)
    assert wk.kernel_has("veth", exists=lambda p: p == "/sys/module/veth")


def test_a_cgroup_v2_only_machine_is_seen_and_mounted_whole():
    v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    mounts = wk.host_cgroup_mounts(v2)
    assert [(m.path, m.fstype) for m in mounts] == [("/sys/fs/cgroup", "cgroup2")]
    assert not wk.cgroup_v1(mounts)
    assert wk.cgroup_dirs("/hwx-node-0", mounts) == [wk.Path("/sys/fs/cgroup/hwx-node-0")]


def test_down_acts_only_on_the_labs_own_cgroup_names():
    assert wk.lab_cgroup("/hw1a2b3-node-0", "hw1a2b3")
    for name in ("/", "/system.slice", "/hw1a2b3-", "/hw1a2b3-a/b", "/hw9-node-0", "/hw1a2b3-..", "hw1a2b3-node-0"):
        assert not wk.lab_cgroup(name, "hw1a2b3"), name


def test_capabilities_count_only_in_the_initial_user_namespace():
    assert wk.in_initial_user_namespace("         0          0 4294967295\n")
    assert not wk.in_initial_user_namespace("         0     100000      65536\n")


def test_a_resolver_under_run_gets_a_copy_for_the_kubelet(kthw_worker_files, tmp_path):
    files, _ = kthw_worker_files
    path = "/etc/kubernetes/kubelet-config.yaml"
    o = wk.kubelet_overlay("node-0", path, files[path], "/r", v1=False, systemd=False, resolv_copy=wk.RESOLV_COPY)
    assert yaml.safe_load(o.content)["resolvConf"] == wk.RESOLV_COPY and "/run" in o.reasons[0]
    link = tmp_path / "resolv.conf"
    link.symlink_to("/run/systemd/resolve/stub-resolv.conf")
    assert wk.resolver_in_run(str(link)) and not wk.resolver_in_run(str(tmp_path))
