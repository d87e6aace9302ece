"""The lab's pure parts: reading ExecStart from unit files, planning the network, planning mounts.

No root needed here; tests/test_lab_system.py runs the same pieces for real.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import textwrap

import pytest

from hardway import resources, spec
from hardway.lab.netns import IFNAMSIZ, LabError, free_address, lab_prefix, lab_subnet, plan_network
from hardway.lab.sandbox import Sandbox, mount_root, mount_roots, overlay_parents
from hardway.lab.units import UnitError, logical_lines, parse_flags, parse_unit
from hardway.plan import WORKSTATION


def unit(body: str) -> str:
    return textwrap.dedent(body).lstrip()


# ---------------------------------------------------------------- units ------------------------

def test_continuations_quotes_and_comments():
    text = unit("""
        [Unit]
        Description=demo
        # a comment
        [Service]
        ExecStart=/usr/local/bin/etcd \\
          --name=server \\
        # systemd skips a comment inside a continuation
          --initial-cluster "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380" \\
          --log-outputs='stderr' \\
          --flag-without-value
        Restart=on-failure
        """)
    u = parse_unit(text, "etcd.service")
    assert u.argv == ("/usr/local/bin/etcd", "--name=server", "--initial-cluster",
                      "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380", "--log-outputs=stderr", "--flag-without-value")
    assert u.binary == "etcd"
    assert u.flags() == {"name": "server", "initial-cluster": "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380",
                         "log-outputs": "stderr", "flag-without-value": None}


def test_environment_expansion_follows_systemd():
    text = unit("""
        [Service]
        Environment="CONFIG=/etc/haproxy/haproxy.cfg" "EXTRA=-S /run/m.sock"
        Environment=PIDFILE=/run/haproxy.pid
        ExecStartPre=-/usr/sbin/haproxy -c -f ${CONFIG}
        ExecStart=/usr/sbin/haproxy -Ws -f $CONFIG -p ${PIDFILE} $EXTRA --x=${CONFIG}.bak 100%%
        RuntimeDirectory=haproxy
        StateDirectory=a b
        """)
    u = parse_unit(text, "haproxy.service")
    # $VAR alone splits at whitespace; ${VAR} inside a word is replaced verbatim.
    assert u.argv == ("/usr/sbin/haproxy", "-Ws", "-f", "/etc/haproxy/haproxy.cfg", "-p", "/run/haproxy.pid",
                      "-S", "/run/m.sock", "--x=/etc/haproxy/haproxy.cfg.bak", "100%")
    assert u.pre == ((True, ("/usr/sbin/haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg")),)
    assert u.directories == ("/run/haproxy", "/var/lib/a", "/var/lib/b")


@pytest.mark.parametrize("body, problem", [
    ("[Unit]\nDescription=x\n", "no [Service]"),
    ("[Service]\nType=simple\n", "no ExecStart"),
    ("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n", "2 ExecStart"),
    ("[Service]\nExecStart=relative --x\n", "absolute path"),
    ("[Service]\nExecStart=/bin/a --name=%n\n", "specifier"),
    ("[Service]\nExecStart=/bin/a 'unterminated\n", "cannot split"),
    ("[Service]\nExecStart=@/bin/a b\n", "argv[0]"),
    ("[Service]\nEnvironmentFile=/etc/default/x\nExecStart=/bin/a\n", "EnvironmentFile"),
    ("ExecStart=/bin/a\n", "expected `[Section]`"),
])
def test_refuses_what_it_cannot_run(body, problem):
    with pytest.raises(UnitError) as e:
        parse_unit(body, "x.service")
    assert problem in str(e.value) and "x.service" in str(e.value)


def test_empty_execstart_resets_and_prefixes_are_dropped():
    u = parse_unit("[Service]\nExecStart=/bin/old\nExecStart=\nExecStart=-/bin/new --a\n", "x.service")
    assert u.argv == ("/bin/new", "--a")


def test_logical_lines_keep_first_line_number():
    lines = logical_lines("a=1\n\nb=2 \\\n  3\n# c\nd=4\n")
    assert lines == [(1, "a=1"), (3, "b=2  3"), (6, "d=4")]


def test_flags_with_separate_values_and_refusal_of_positionals():
    assert parse_flags(["--a", "1", "--b", "--c=x=y", "-v", "2"]) == [("a", "1"), ("b", None), ("c", "x=y"), ("v", "2")]
    with pytest.raises(UnitError):
        parse_flags(["positional"])


# ---------------------------------------------------------------- network plan -----------------

@pytest.mark.parametrize("example", ["kthw", "ha", "large"])
def test_network_plan_covers_every_node(example, tmp_path):
    cluster = spec.load(resources.example_path(example))
    net = plan_network(cluster, lab_prefix(tmp_path))
    simulated = {n.name for n in cluster.nodes}
    assert {m.node for m in net.members} == simulated | {WORKSTATION}
    for m in net.members:
        if m.node != WORKSTATION:
            assert m.address == cluster.node(m.node).address
        assert m.address in net.subnet
        assert len(m.peer) <= IFNAMSIZ and len("eth0") <= IFNAMSIZ
    ws = net.member(WORKSTATION).address
    assert ws not in {n.address for n in cluster.nodes}, "the workstation must not take a node's address"
    assert ws not in (net.subnet.network_address, net.subnet.broadcast_address)
    names = net.namespaces
    assert len(set(names)) == len(names) and all(n.startswith(net.prefix + "-") for n in names)
    assert len({m.peer for m in net.members}) == len(net.members)


def test_subnet_and_free_address():
    a = [ipaddress.ip_address(x) for x in ("10.240.0.10", "10.240.0.254", "10.240.1.3")]
    net = lab_subnet(a)
    assert str(net) == "10.240.0.0/23"
    assert free_address(net, set(a)) == ipaddress.ip_address("10.240.1.254")
    full = ipaddress.ip_network("10.0.0.0/30")
    with pytest.raises(LabError):
        free_address(full, {ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")})
    v6 = [ipaddress.ip_address("fd00::10"), ipaddress.ip_address("fd00::11")]
    assert str(lab_subnet(v6)) == "fd00::/64"


def test_prefix_is_per_lab_directory(tmp_path):
    assert lab_prefix(tmp_path / "a") != lab_prefix(tmp_path / "b")
    assert lab_prefix(tmp_path / "a") == lab_prefix(tmp_path / "a")
    # Namespace names and the longest veth name stay short whatever the directory.
    assert len(lab_prefix(tmp_path / ("x" * 200))) <= 8


# ---------------------------------------------------------------- mounts -----------------------

def test_mount_roots_from_plan_paths():
    paths = ["/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/encryption-config.yaml", "/etc/systemd/system/etcd.service",
             "/var/lib/etcd", "/var/log/kubernetes", "/etc/haproxy/haproxy.cfg", "/run", "/run/haproxy",
             "/usr/local/bin/etcd", "/etc/crictl.yaml"]
    assert mount_roots(paths) == ["/etc/crictl.yaml", "/etc/haproxy", "/etc/kubernetes", "/run",
                                  "/var/lib/etcd", "/var/log/kubernetes"]
    assert mount_root("/etc/systemd/system/x.service") is None
    assert mount_root("/home/user/x") is None


def test_overlay_only_where_a_mount_point_is_missing():
    on_host = {"/", "/etc", "/var", "/var/lib", "/var/log", "/etc/haproxy", "/run"}
    parents = overlay_parents(["/etc/kubernetes", "/etc/haproxy", "/var/lib/etcd", "/var/log/kubernetes", "/run"],
                              on_host.__contains__)
    assert parents == ["/etc", "/var/lib", "/var/log"]
    assert overlay_parents(["/etc/haproxy", "/run"], on_host.__contains__) == []
    # Nested: one overlay on the outer parent is enough.
    assert overlay_parents(["/var/lib/etcd", "/var/lib/x/y"], {"/", "/var", "/var/lib", "/var/lib/x"}.__contains__) == ["/var/lib"]
    with pytest.raises(LabError, match="does not exist"):
        overlay_parents(["/nonexistent/dir"], on_host.__contains__)


def test_sandbox_command_shape(tmp_path):
    root = tmp_path / "root"
    (root / "etc/kubernetes").mkdir(parents=True)
    box = Sandbox("hwx-server", "server", tmp_path / "hosts", tmp_path / ".mnt",
                  ((root / "etc/kubernetes", "/etc/kubernetes"),))
    argv = box.command(["/bin/echo", "a b", "$HOME"], exists={"/", "/etc"}.__contains__)
    assert argv[:9] == ["ip", "netns", "exec", "hwx-server", "unshare", "--mount", "--uts", "--propagation", "private"]
    assert argv[-3:] == ["/bin/echo", "a b", "$HOME"], "arguments pass through untouched, never re-quoted"
    script = argv[argv.index("-c") + 1]
    order = [line.split()[0] + " " + line.split()[-1] for line in script.splitlines() if line.startswith("mount")]
    assert order == [f"mount {tmp_path / '.mnt'}", "mount /etc", "mount /etc/kubernetes", "mount /etc/hosts"]
    assert "/proc/sys/kernel/hostname" in script and script.endswith('exec "$@"')
    assert shlex.split(script.splitlines()[-2]) == ["echo", "server", ">", "/proc/sys/kernel/hostname"]


def test_sandbox_refuses_a_lab_inside_an_overlaid_directory():
    box = Sandbox("ns", "n", "/var/lib/lab/hosts", "/var/lib/lab/.mnt", (("/var/lib/lab/root/var/lib/etcd", "/var/lib/etcd"),))
    with pytest.raises(LabError, match="cannot live under /var/lib"):
        box.command(["true"], exists={"/", "/var", "/var/lib"}.__contains__)


# ---------------------------------------------------------------- refusals before any work -----

def test_up_without_root_says_so_and_writes_nothing(tmp_path, monkeypatch):
    from hardway.lab import lab as labmod
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cluster = spec.load(resources.example_path("kthw"))
    with pytest.raises(LabError) as e:
        labmod.up(cluster, tmp_path / "out")
    assert "root" in str(e.value) and "sudo hardway lab.up" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_up_without_binaries_names_them_and_the_command(tmp_path, monkeypatch):
    from hardway.lab import lab as labmod
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("HARDWAY_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HARDWAY_BIN_DIR", raising=False)
    cluster = spec.load(resources.example_path("kthw"))
    with pytest.raises(LabError) as e:
        labmod.up(cluster, tmp_path / "out", bin_dir=str(tmp_path / "nothing-here"))
    message = str(e.value)
    for name in ("etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        assert name in message
    assert "hardway lab.binaries" in message and str(tmp_path / "nothing-here") in message
    assert not (tmp_path / "out").exists()


def test_haproxy_maxconn_is_read_from_the_global_section_only():
    from hardway.lab.lab import _global_maxconn
    cfg = "global\n  log /dev/log local0\n  maxconn 20000 # per process\n\ndefaults\n  maxconn 5\n"
    assert _global_maxconn(cfg) == 20000
    assert _global_maxconn("defaults\n  maxconn 5\nglobal\n  daemon\n") is None


def test_lab_binaries_task_reports_the_cache_and_refuses_other_versions(tmp_path):
    import subprocess
    import sys
    from hardway.binaries import ALL_BINARIES as BINARIES, pinned_version
    version = pinned_version()
    cache = tmp_path / "cache"
    (cache / version / "bin" / "cni").mkdir(parents=True)
    for name in BINARIES:  # already "built" (workers' and CNI plugins too): the task must not call Go at all
        exe = cache / version / "bin" / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    env = {**os.environ, "HARDWAY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "hardway", "lab.binaries"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in BINARIES:
        assert f"{name}: {cache / version / 'bin' / name}" in done.stdout
    other = subprocess.run([sys.executable, "-m", "hardway", "lab.binaries", "--version", "v1.36.0"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert "v1.36.0" in other.stderr and "HARDWAY_BIN_DIR" in other.stderr


def test_lab_up_timeout_shows_its_value_type():
    """`lab.up --help` shows `-t INT, --timeout=INT`: Invoke prints no placeholder for a float default."""
    from hardway.lab.tasks import up
    timeout = next(a for a in up.get_arguments() if a.name == "timeout")
    assert timeout.kind is int and timeout.takes_value
