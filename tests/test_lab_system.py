"""The lab's machinery for real, without Kubernetes: namespaces and veths, the mount sandbox, the
process supervisor, and `down` when nothing (or half a lab) is up. Needs root (skips otherwise,
fails under CI=true)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardway import resources, spec
from hardway.lab import lab as labmod
from hardway.lab import netns, procs
from hardway.lab.sandbox import Sandbox
from helpers import need_namespaces
from hardway.plan import WORKSTATION


@pytest.fixture(autouse=True)
def _root():
    need_namespaces()


def _host_view() -> dict:
    """What the lab must never change in the host's own network and mount namespaces."""
    def out(*argv):
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in out("ip", "-o", "link").splitlines()),
        "addresses": out("ip", "-o", "addr"),
        "routes": out("ip", "route") + out("ip", "-6", "route"),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                         if not line.split()[4].startswith("/run/netns")),
    }


@pytest.fixture
def network(tmp_path):
    cluster = spec.load(resources.example_path("ha"))
    net = netns.plan_network(cluster, netns.lab_prefix(tmp_path))
    created: list[str] = []
    try:
        yield cluster, net, created
    finally:
        netns.destroy(created)


def test_network_reaches_nodes_from_the_workstation_and_leaves_the_host_alone(network, tmp_path):
    cluster, net, created = network
    before = _host_view()
    netns.create(net, created.append)
    assert set(created) == set(net.namespaces)
    assert set(net.namespaces) <= set(netns.existing_namespaces(net.prefix))
    during = _host_view()
    assert during == before, "the lab added an interface, address, route or mount to the host"

    lb = net.member("lb")
    for m in net.members:
        out = subprocess.run(["ip", "-n", m.netns, "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True).stdout
        assert f"{m.address}/{net.subnet.prefixlen}" in out
        route = subprocess.run(["ip", "-n", m.netns, "route", "show", "default"], capture_output=True, text=True).stdout
        assert route.startswith("default"), f"{m.netns} has no default route (kube-apiserver wants one)"
        lo = subprocess.run(["ip", "-n", m.netns, "-o", "link", "show", "lo"], capture_output=True, text=True).stdout
        assert "UP" in lo

    # A TCP round trip from the workstation namespace to the load balancer's address.
    server = subprocess.Popen(["ip", "netns", "exec", lb.netns, sys.executable, "-c",
                               "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                               f"s.bind(('{lb.address}',7000));s.listen();print('ready',flush=True);"
                               "c,a=s.accept();c.sendall(a[0].encode());c.close()"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(["ip", "netns", "exec", net.member(WORKSTATION).netns, sys.executable, "-c",
                                 f"import socket;s=socket.create_connection(('{lb.address}',7000),timeout=5);print(s.recv(64).decode())"],
                                capture_output=True, text=True, timeout=20)
        assert client.stdout.strip() == str(net.member(WORKSTATION).address)
    finally:
        server.kill()
        server.wait()

    # The host itself has no foot in the lab: none of its addresses or routes is in the lab subnet.
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout.split()
    assert not any(w.split("/")[0] in {str(m.address) for m in net.members} for w in host_addrs)
    assert str(net.subnet) not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    deleted = netns.destroy(created)
    assert set(deleted) == set(net.namespaces)
    assert netns.existing_namespaces(net.prefix) == []
    assert _host_view() == before
    created.clear()


def test_sandbox_binds_node_files_hosts_and_hostname_without_touching_the_host(network, tmp_path):
    cluster, net, created = network
    netns.create(net, created.append)
    root = tmp_path / "root"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki/ca.crt").write_text("node file\n")
    (root / "var/lib/etcd").mkdir(parents=True, mode=0o700)
    (root / "run").mkdir()
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("10.240.0.11 controller-0.kubernetes.local controller-0\n")
    scratch = tmp_path / ".mnt"
    scratch.mkdir()
    box = Sandbox(net.member("controller-0").netns, "controller-0", hosts, scratch,
                  ((root / "etc/kubernetes", "/etc/kubernetes"), (root / "var/lib/etcd", "/var/lib/etcd"), (root / "run", "/run")))
    host_had = {p: os.path.lexists(p) for p in ("/etc/kubernetes", "/var/lib/etcd")}
    before = _host_view()
    script = ("cat /etc/kubernetes/pki/ca.crt; getent hosts controller-0.kubernetes.local; hostname;"
              "echo written > /var/lib/etcd/member; echo pid > /run/x.pid; ip -o -4 addr show dev eth0")
    res = subprocess.run(box.command(["sh", "-c", script]), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "node file"
    assert lines[1].split() == ["10.240.0.11", "controller-0.kubernetes.local", "controller-0"]
    assert lines[2] == "controller-0"
    assert "10.240.0.11/" in lines[3]
    # Writes landed in the node's root, not on the host; no mount and no directory was left behind.
    assert (root / "var/lib/etcd/member").read_text() == "written\n"
    assert (root / "run/x.pid").read_text() == "pid\n"
    assert {p: os.path.lexists(p) for p in host_had} == host_had
    assert not Path("/run/x.pid").exists()
    assert _host_view() == before
    assert list(scratch.iterdir()) == [], "the overlay's upper directories live on a tmpfs that dies with the process"
    assert os.uname().nodename != "controller-0"


def test_processes_are_stopped_by_pid_term_then_kill(tmp_path):
    polite = procs.start("n", "polite.service", [sys.executable, "-c", "import time; time.sleep(600)"], {"PATH": "/usr/bin:/bin"},
                         tmp_path / "logs/polite.log", tmp_path / "run/polite.pid")
    stubborn = procs.start("n", "stubborn.service", [sys.executable, "-c",
                           "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(600)"],
                           {"PATH": "/usr/bin:/bin"}, tmp_path / "logs/stubborn.log", tmp_path / "run/stubborn.pid")
    assert Path(polite.pid_file).read_text().strip() == str(polite.pid)
    deadline = time.monotonic() + 10
    while "armed" not in Path(stubborn.log).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.alive(polite) and procs.alive(stubborn)
    # A record whose start time does not match is somebody else's process: never signalled.
    impostor = procs.Process.from_dict({**polite.to_dict(), "start_time": polite.start_time + 1})
    assert not procs.alive(impostor)
    assert procs.stop([impostor]) == [] and procs.alive(polite)

    report = procs.stop([polite, stubborn], grace=1.0)
    assert not procs.alive(polite) and not procs.alive(stubborn)
    assert len(report) == 1 and "stubborn" in report[0] and "killed" in report[0]
    assert not Path(polite.pid_file).exists() and not Path(stubborn.pid_file).exists()
    assert "starting polite.service on n" in Path(polite.log).read_text()
    # Stopping again is harmless.
    assert procs.stop([polite, stubborn]) == []


def test_down_is_safe_when_nothing_is_up_and_cleans_a_half_built_lab(tmp_path):
    labdir = tmp_path / "lab"
    assert labmod.down(labdir) == []
    assert labmod.down(labdir) == []
    # A lab that died half-way: a state file naming one namespace, one more with the lab's prefix,
    # and a process still running inside it.
    prefix = netns.lab_prefix(labdir)
    names = [f"{prefix}-br", f"{prefix}-server"]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
    stray = subprocess.Popen(["ip", "netns", "exec", names[1], "sleep", "600"], start_new_session=True)
    labdir.mkdir()
    (labdir / labmod.STATE).write_text(json.dumps({"cluster": "x", "version": "v1.37.2", "api_url": "https://x:6443",
                                                   "namespaces": names[:1]}))
    try:
        deadline = time.monotonic() + 10
        while stray.pid not in netns.namespace_pids(names[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert labmod.is_up(labdir)
        done = labmod.down(labdir)
        # down() reaps what it kills when it can, so the exit status may already be collected.
        stray.wait(timeout=15)
        assert not Path(f"/proc/{stray.pid}").exists()
        assert netns.existing_namespaces(prefix) == []
        assert not (labdir / labmod.STATE).exists()
        assert any("deleted namespace" in d for d in done)
        assert not labmod.is_up(labdir)
        assert labmod.down(labdir) == []
    finally:
        if stray.poll() is None:
            stray.kill()
        netns.destroy(names)


SMALL_SPEC = """\
name: lab-small
apiServer:
  endpoint: api.small.local
pki:
  keyAlgorithm: ECDSA-P256
nodes:
  - {name: ctl, address: 10.250.0.5, roles: [controller]}
  - {name: wrk, address: 10.250.0.6, roles: [worker]}
"""


def _fake_bin(tmp_path, etcd_body: str) -> Path:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name in labmod.LAB_BINARIES:
        body = etcd_body if name == "etcd" else "exec sleep 600\n"
        (bindir / name).write_text("#!/bin/sh\n" + body)
        (bindir / name).chmod(0o755)
    return bindir


def test_a_failing_up_takes_down_everything_it_started(tmp_path):
    """The real bundle and install.sh, fake binaries: etcd dies at start. up must report why
    (the end of etcd's log) and leave no process and no namespace behind."""
    cluster = spec.loads(SMALL_SPEC)
    out, labdir = tmp_path / "out", tmp_path / "out" / "lab"
    bindir = _fake_bin(tmp_path, 'echo "etcd: simulated failure, args: $*"\nexit 3\n')
    before = _host_view()
    with pytest.raises(labmod.LabError) as e:
        labmod.up(cluster, out, labdir=labdir, bin_dir=str(bindir), timeout=20)
    message = str(e.value)
    assert "ctl/etcd.service exited while starting" in message
    assert "simulated failure" in message and "--name=ctl" in message, "the log tail names the unit's own flags"
    assert netns.existing_namespaces(netns.lab_prefix(labdir)) == []
    assert not (labdir / labmod.STATE).exists()
    assert _host_view() == before
    # What up did install stays for reading: the node's root came from its own install.sh.
    assert (labdir / "ctl/root/etc/systemd/system/etcd.service").is_file()
    assert oct((labdir / "ctl/root/var/lib/etcd").stat().st_mode & 0o777) == "0o700"
    assert (labdir / "wrk/root/etc/systemd/system/kubelet.service").is_file(), "workers are installed by their own install.sh too"


def test_up_refuses_a_second_lab_in_the_same_directory_and_times_out_cleanly(tmp_path):
    cluster = spec.loads(SMALL_SPEC)
    out, labdir = tmp_path / "out", tmp_path / "out" / "lab"
    bindir = _fake_bin(tmp_path, "exec sleep 600\n")  # runs, never answers /health
    prefix = netns.lab_prefix(labdir)
    subprocess.run(["ip", "netns", "add", f"{prefix}-br"], check=True)
    try:
        with pytest.raises(labmod.LabError, match="already up"):
            labmod.up(cluster, out, labdir=labdir, bin_dir=str(bindir), timeout=5)
    finally:
        netns.destroy([f"{prefix}-br"])
    with pytest.raises(labmod.LabError) as e:
        labmod.up(cluster, out, labdir=labdir, bin_dir=str(bindir), timeout=3)
    assert "etcd /health at https://10.250.0.5:2379: not ready after 3s" in str(e.value)
    assert netns.existing_namespaces(prefix) == []
    pids = subprocess.run(["pgrep", "-f", str(bindir)], capture_output=True, text=True).stdout.split()
    assert pids == [], "a fake etcd survived the failed up"
