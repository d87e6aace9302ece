"""`hardway deploy` against real sshd servers (Debian's openssh-server, one per node of the kthw
example, in a network namespace of their own: tests/sshd_helpers.py), installing under
`--remote-root` so no cluster needs to run: what is installed is checked against the bundle's own
install.sh run by hand. The failures the docs promise: a wrong pinned host key, an unknown one
(and --accept-new), a refused login, a node that dies in the middle of its install, a failed
controller; each leaves the other nodes done, and a re-run resumes. The lab proof (a cluster started
from what deploy installed) is tests/test_e2e_deploy.py.

The pure parts (what to do per node, the order, the selection) are tested below without SSH.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hardway.deploy import plan as dp
from hardway.deploy.targets import targets
from hardway.errors import HardwayError
from hardway import spec as spec_mod
from helpers import REPO, need_fabric
from sshd_helpers import ssh_nodes

ADDRESSES = {"server": "10.240.0.10", "node-0": "10.240.0.20", "node-1": "10.240.0.21"}


# ---------------------------------------------------------------- pure: no SSH --------------------

@pytest.mark.parametrize("installed, started, has_archive, start, action", [
    (None, False, False, True, dp.Action.UPLOAD),
    (None, False, True, True, dp.Action.INSTALL),        # uploaded and verified, then cut off
    ("OLD", True, False, True, dp.Action.UPLOAD),        # another bundle installed: the new one is needed
    ("OLD", True, True, False, dp.Action.INSTALL),
    ("NEW", True, False, True, dp.Action.SKIP),
    ("NEW", False, True, False, dp.Action.SKIP),         # installed without --start, asked without
    ("NEW", True, True, False, dp.Action.SKIP),          # started; --no-start asks for less
    ("NEW", False, True, True, dp.Action.START),         # installed without --start, now asked to start
    ("NEW", False, False, True, dp.Action.UPLOAD),       # ... and its archive is gone
])
def test_decide(installed, started, has_archive, start, action):
    assert dp.decide("NEW", dp.NodeState(installed, started, has_archive), start) == action


def test_parse_probe():
    d = "a" * 64
    assert dp.parse_probe(f"{d} n1 started\n{d}  /x/n1.tar.gz\n", d) == dp.NodeState(d, True, True)
    assert dp.parse_probe(f"{d} n1 installed\nabsent\n", d) == dp.NodeState(d, False, False)
    assert dp.parse_probe("none\nabsent\n", d) == dp.NodeState(None, False, False)
    assert dp.parse_probe("garbage\n", d) == dp.NodeState(None, False, False)
    assert dp.parse_probe(f"none\n{'b' * 64}  /x/n1.tar.gz\n", d).has_archive is False


def test_selection_and_order(example_path):
    ts = targets(spec_mod.load(example_path("ha")))
    assert [(ph, [t.node for t in b]) for ph, b in dp.phases(list(ts))] == [
        ("loadbalancer", ["lb"]), ("controller", ["controller-0", "controller-1", "controller-2"]),
        ("worker", ["node-0", "node-1", "node-2"])]
    assert [t.node for t in dp.select(ts, role="worker")] == ["node-0", "node-1", "node-2"]
    assert [t.node for t in dp.select(ts, only=["node-2", "lb"])] == ["lb", "node-2"]
    assert [t.node for t in dp.select(ts, only=["node-2", "lb"], role="worker")] == ["node-2"]
    with pytest.raises(HardwayError, match=r"--only nod-1: no such node in the spec; did you mean node-1\?"):
        dp.select(ts, only=["nod-1"])
    with pytest.raises(HardwayError, match=r"--role workers: no such role; the roles are controller, worker, "
                                           r"loadbalancer; did you mean worker\?"):
        dp.select(ts, role="workers")
    with pytest.raises(HardwayError, match="no node is both in --only lb and of role worker"):
        dp.select(ts, only=["lb"], role="worker")


def test_remote_root():
    assert dp.parse_remote_root(None) is None
    assert dp.parse_remote_root("/srv/lab/{node}/root/") == "/srv/lab/{node}/root"
    assert dp.node_root("/srv/lab/{node}/root", "n1") == "/srv/lab/n1/root"
    assert dp.state_dir(None, "n1") == "/var/lib/hardway/deploy"
    assert dp.state_dir("/srv/{node}", "n1") == "/srv/n1/var/lib/hardway/deploy"
    for bad in ("srv/{node}", "/srv/{name}", "/srv/../etc", "/srv/{node\n}"):
        with pytest.raises(HardwayError, match="give an absolute directory on the node"):
            dp.parse_remote_root(bad)


def test_as_user():
    assert dp.as_user("echo 'a b'", "root") == "sh -c 'echo '\"'\"'a b'\"'\"''"
    assert dp.as_user("true", "deploy") == "sudo -n sh -c true"


def test_the_node_side_refuses_bytes_that_are_not_the_archive(tmp_path):
    """verify_command and install_command run by a real sh: a wrong upload is removed, and an
    archive whose bytes changed after the upload is not unpacked."""
    state = tmp_path / "state"
    data = b"the archive hardway wrote"
    digest = hashlib.sha256(data).hexdigest()
    (state / "bundles" / digest).mkdir(parents=True)
    part = state / "bundles" / digest / "n1.tar.gz.part"
    part.write_bytes(b"what arrived instead")
    run = subprocess.run(["sh", "-c", dp.verify_command(str(state), digest, "n1")], capture_output=True, text=True)
    assert run.returncode == dp.DIGEST_MISMATCH
    assert hashlib.sha256(b"what arrived instead").hexdigest() in run.stderr
    assert not part.exists() and not (state / "bundles" / digest / "n1.tar.gz").exists()
    part.write_bytes(data)
    assert subprocess.run(["sh", "-c", dp.verify_command(str(state), digest, "n1")]).returncode == 0
    archive = state / "bundles" / digest / "n1.tar.gz"
    assert archive.read_bytes() == data
    archive.write_bytes(b"changed on the node afterwards")
    run = subprocess.run(["sh", "-c", dp.install_command(str(state), digest, "n1", str(tmp_path / "root"), False)],
                         capture_output=True, text=True)
    assert run.returncode == dp.DIGEST_MISMATCH and "nothing installed" in run.stderr
    assert not (tmp_path / "root").exists() and not (state / "installed").exists()


def test_manifests_digest_depends_on_every_byte_and_name():
    a = dp.manifests_digest([("m/a.yaml", b"x"), ("m/b.yaml", b"y")])
    assert a == dp.manifests_digest([("m/b.yaml", b"y"), ("m/a.yaml", b"x")])
    assert a != dp.manifests_digest([("m/a.yaml", b"x"), ("m/b.yaml", b"z")])
    assert a != dp.manifests_digest([("m/a.yaml", b"xy"), ("m/b.yaml", b"")])
    assert a != dp.manifests_digest([("m/c.yaml", b"x"), ("m/b.yaml", b"y")])


def test_startup_does_not_import_fabric():
    code = "import sys, hardway.cli, hardway.tasks; bad = [m for m in ('fabric', 'paramiko') if m in sys.modules]; " \
           "print(bad); sys.exit(1 if bad else 0)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout + run.stderr


def test_without_fabric_deploy_says_how_to_install_it(tmp_path, run_cli, example_path):
    shutil.copy(example_path("kthw"), tmp_path / "cluster.yaml")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['fabric'] = None\n")
    run = run_cli(["deploy"], cwd=tmp_path, extra_env={"PYTHONPATH": f"{blocker}:{REPO}"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pip install 'hardway[deploy]'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- against real sshd ---------------

@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    need_fabric()
    with ssh_nodes(tmp_path_factory.mktemp("sshd"), ADDRESSES) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory, nodes):
    """The kthw example (ECDSA keys: quick), its ssh block pinning each server's host keys, bundled."""
    d = tmp_path_factory.mktemp("cluster")
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
    data["pki"]["keyAlgorithm"] = "ECDSA-P256"
    data["ssh"] = {"identity": str(nodes.key.private)}
    for n in data["nodes"]:
        n["ssh"] = {"hostKeys": nodes.servers[n["name"]].host_keys}
    (d / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "hardway", "bundle", "--spec", "cluster.yaml", "--out", "out"], cwd=d,
                         capture_output=True, text=True, env=_env())
    assert run.returncode == 0, run.stderr
    return d


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200", "NO_COLOR": "1"}


def deploy(nodes, cwd: Path, root: Path, *args: str, spec: str = "cluster.yaml", timeout: float = 180):
    """`hardway deploy` run in the servers' namespace, as a workstation reaches its nodes."""
    return subprocess.run(nodes.inside([sys.executable, "-m", "hardway", "deploy", "--spec", spec, "--out", "out",
                                        "--remote-root", f"{root}/{{node}}/root", *args]),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


def rows(output: str) -> dict[str, tuple[str, str]]:
    """node -> (action, result) from the end table."""
    found = {}
    for line in output.splitlines():
        words = line.split()
        if words and (words[0] in ADDRESSES or words[0] == "manifests"):
            rest = line.split(None, 1)[1].rsplit(None, 1)[0]
            for action in [a.value for a in dp.Action] + [st.value for st in dp.Step]:
                if rest.startswith(action + " "):
                    found[words[0]] = (action, rest[len(action):].strip())
    return found


def _reference_install(cluster_dir: Path, node: str, dest: Path) -> Path:
    """The node's bundle installed by hand, as INSTALL.md says (tar, then install.sh --root)."""
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(cluster_dir / "out" / "bundles" / f"{node}.tar.gz"), "-C", str(dest)], check=True)
    subprocess.run(["sh", str(dest / node / "install.sh"), "--root", str(dest / "root")], check=True,
                   capture_output=True)
    return dest / "root"


def _same_tree(a: Path, b: Path, skip: str = "var/lib/hardway") -> list[str]:
    """Differences between two installed roots (content and mode), deploy's own state left out."""
    diffs = []
    names = lambda root: {str(p.relative_to(root)) for p in root.rglob("*")} - {  # noqa: E731
        str(p.relative_to(root)) for p in (root / skip).rglob("*")} - {skip}
    left, right = names(a), names(b)
    diffs += sorted(left ^ right)
    for rel in sorted(left & right):
        pa, pb = a / rel, b / rel
        if pa.stat().st_mode != pb.stat().st_mode:
            diffs.append(f"{rel}: mode {oct(pa.stat().st_mode)} != {oct(pb.stat().st_mode)}")
        elif pa.is_file() and not filecmp.cmp(pa, pb, shallow=False):
            diffs.append(f"{rel}: content")
    return diffs


@pytest.mark.slow
def test_deploy_installs_every_node_then_skips_them(nodes, cluster_dir, tmp_path):
    roots = tmp_path / "nodes"
    dry = deploy(nodes, cluster_dir, roots, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert rows(dry.stdout) == {n: ("upload+install", "dry run: nothing changed") for n in ADDRESSES}
    assert "deploy (dry run): 3 to do, 0 up to date; nothing changed" in dry.stdout
    assert not roots.exists()  # a dry run changes nothing

    first = deploy(nodes, cluster_dir, roots)
    assert first.returncode == 0, first.stdout + first.stderr
    got = rows(first.stdout)
    assert set(got) == set(ADDRESSES) and all(a == "upload+install" and r.startswith("ok: ") for a, r in got.values()), got
    assert "deploy: 3 done, 0 up to date" in first.stdout
    for node in ADDRESSES:
        archive = (cluster_dir / "out" / "bundles" / f"{node}.tar.gz").read_bytes()
        digest = hashlib.sha256(archive).hexdigest()
        state = roots / node / "root" / "var/lib/hardway/deploy"
        assert (state / "installed").read_text() == f"{digest} {node} installed\n"
        assert (state / "bundles" / digest / f"{node}.tar.gz").read_bytes() == archive
        assert [p.name for p in (state / "bundles").iterdir()] == [digest]
        assert oct((state / "bundles" / digest / node / "rootfs").stat().st_mode & 0o777) in ("0o700",)
        reference = _reference_install(cluster_dir, node, tmp_path / "by-hand" / node)
        assert _same_tree(roots / node / "root", reference) == []
    logins = {n: nodes.servers[n].log.read_text().count("Accepted publickey") for n in ADDRESSES}

    again = deploy(nodes, cluster_dir, roots)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows(again.stdout) == {n: ("up to date", "skipped") for n in ADDRESSES}
    assert "deploy: 0 done, 3 up to date" in again.stdout
    # one login per node, and no upload: the archive on each node is the one of the first run
    assert {n: nodes.servers[n].log.read_text().count("Accepted publickey") for n in ADDRESSES} == {
        n: c + 1 for n, c in logins.items()}
    dry = deploy(nodes, cluster_dir, roots, "--dry-run")
    assert rows(dry.stdout) == {n: ("up to date", "dry run: nothing changed") for n in ADDRESSES}
    assert "deploy (dry run): 0 to do, 3 up to date; nothing changed" in dry.stdout


@pytest.mark.slow
def test_a_spec_change_deploys_exactly_the_nodes_plan_names(nodes, cluster_dir, tmp_path):
    work = tmp_path / "c"
    shutil.copytree(cluster_dir, work)
    roots = tmp_path / "nodes"
    assert deploy(nodes, work, roots).returncode == 0
    data = yaml.safe_load((work / "cluster.yaml").read_text())
    data["apiServer"]["extraSANs"].append("api.new.example.com")
    (work / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    plan = subprocess.run([sys.executable, "-m", "hardway", "plan", "--json", "--spec", "cluster.yaml", "--out", "out"],
                          cwd=work, capture_output=True, text=True, env=_env())
    named = json.loads(plan.stdout)["deploy"]["nodes"]
    assert named == ["server"]  # the new SAN is in the API server's certificate only
    text = subprocess.run([sys.executable, "-m", "hardway", "plan", "--spec", "cluster.yaml", "--out", "out"],
                          cwd=work, capture_output=True, text=True, env=_env()).stdout
    assert "deploy: would touch 1 node(s): server" in text
    assert subprocess.run([sys.executable, "-m", "hardway", "bundle", "--spec", "cluster.yaml", "--out", "out"],
                          cwd=work, capture_output=True, env=_env()).returncode == 0
    run = deploy(nodes, work, roots)
    assert run.returncode == 0, run.stdout + run.stderr
    touched = [n for n, (action, _) in rows(run.stdout).items() if action != "up to date"]
    assert touched == named
    cert = roots / "server" / "root" / "etc/kubernetes/pki/kube-apiserver.crt"
    sans = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
                          capture_output=True, text=True).stdout
    assert "DNS:api.new.example.com" in sans


def _spec_with(cluster_dir: Path, tmp_path: Path, change) -> Path:
    work = tmp_path / "c"
    shutil.copytree(cluster_dir, work)
    data = yaml.safe_load((work / "cluster.yaml").read_text())
    change(data)
    (work / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return work


@pytest.mark.slow
def test_a_wrong_pinned_host_key_stops_that_node_only(nodes, cluster_dir, tmp_path):
    other = nodes.servers["node-1"].host_keys  # a real key, of another server

    def pin_wrong(data):
        data["nodes"][1]["ssh"]["hostKeys"] = other
    work = _spec_with(cluster_dir, tmp_path, pin_wrong)
    roots = tmp_path / "nodes"
    logins = nodes.servers["node-0"].log.read_text().count("Accepted publickey")
    run = deploy(nodes, work, roots)
    assert run.returncode == 1
    got = rows(run.stdout)
    assert got["node-0"][0] == "connect" and got["node-0"][1].startswith("failed: host key CHANGED for 10.240.0.20")
    assert "someone may be intercepting" in run.stdout
    assert got["server"][1].startswith("ok") and got["node-1"][1].startswith("ok")
    assert "deploy: 1 failed: node-0" in run.stdout
    assert not (roots / "node-0").exists()  # nothing done there
    # no login on node-0: its key was refused before authentication
    assert nodes.servers["node-0"].log.read_text().count("Accepted publickey") == logins


@pytest.mark.slow
def test_unknown_host_keys_and_accept_new(nodes, cluster_dir, tmp_path):
    def unpinned(data):
        for n in data["nodes"]:
            del n["ssh"]
    work = _spec_with(cluster_dir, tmp_path, unpinned)
    known = tmp_path / "known_hosts"
    roots = tmp_path / "nodes"
    run = deploy(nodes, work, roots, "--known-hosts", str(known))
    assert run.returncode == 1
    got = rows(run.stdout)
    assert all(r.startswith("failed: unknown host key for ") for _, r in got.values() if _ == "connect"), got
    assert got["server"][0] == "connect"
    assert got["node-0"] == ("not attempted", "a controller failed first (the workers need the API)")
    assert not known.exists() and not roots.exists()
    accepted = deploy(nodes, work, roots, "--known-hosts", str(known), "--accept-new")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert accepted.stdout.count("accepted new host key") == 3
    lines = known.read_text().splitlines()
    assert sorted(l.split()[0] for l in lines) == sorted(ADDRESSES.values())
    # what was accepted is what each server holds
    for line in lines:
        node = next(n for n, a in ADDRESSES.items() if a == line.split()[0])
        assert " ".join(line.split()[1:]) in nodes.servers[node].host_keys
    strict = deploy(nodes, work, roots, "--known-hosts", str(known))
    assert strict.returncode == 0 and "accepted new host key" not in strict.stdout
    assert rows(strict.stdout) == {n: ("up to date", "skipped") for n in ADDRESSES}


@pytest.mark.slow
def test_refused_login_and_a_node_down_mid_run_then_resume(nodes, cluster_dir, tmp_path):
    roots = tmp_path / "nodes"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    try:
        nodes.start("node-0", authorized=[(tmp_path / "stranger.pub").read_text().strip()])
        nodes.start("node-1", die_on="install.sh")
        run = deploy(nodes, cluster_dir, roots)
        assert run.returncode == 1
        got = rows(run.stdout)
        assert got["server"][1].startswith("ok")
        assert got["node-0"][0] == "connect" and got["node-0"][1].startswith("failed: login refused for root@10.240.0.20:22")
        assert got["node-1"] == ("upload+install", "failed: connection lost during install.sh")
        assert "deploy: 2 failed: node-0, node-1" in run.stdout
        assert (nodes.directory / "node-1" / "died").exists()
        assert not nodes.servers["node-1"].alive()  # the node is down
        assert not (roots / "node-1" / "root" / "var/lib/hardway/deploy/installed").exists()
    finally:
        nodes.start("node-0")
        nodes.start("node-1")
    resumed = deploy(nodes, cluster_dir, roots)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    got = rows(resumed.stdout)
    assert got["server"] == ("up to date", "skipped")
    assert got["node-0"][0] == "upload+install" and got["node-0"][1].startswith("ok")
    # node-1's archive arrived and was verified before it went down: no second upload
    assert got["node-1"][0] == "install" and got["node-1"][1].startswith("ok")


@pytest.mark.slow
def test_a_failed_controller_stops_before_the_workers(nodes, cluster_dir, tmp_path):
    roots = tmp_path / "nodes"
    try:
        nodes.servers["server"].stop()
        run = deploy(nodes, cluster_dir, roots)
    finally:
        nodes.start("server")
    assert run.returncode == 1
    got = rows(run.stdout)
    assert got["server"][0] == "connect" and "cannot connect to root@10.240.0.10:22" in got["server"][1]
    assert got["node-0"] == got["node-1"] == ("not attempted", "a controller failed first (the workers need the API)")
    assert "deploy: 3 failed: server, node-0, node-1" in run.stdout
    # --role worker goes on without them, by request
    workers = deploy(nodes, cluster_dir, roots, "--role", "worker")
    assert workers.returncode == 0 and set(rows(workers.stdout)) == {"node-0", "node-1"}


@pytest.mark.slow
def test_bundles_that_fail_check_are_not_deployed(nodes, cluster_dir, tmp_path):
    work = tmp_path / "c"
    shutil.copytree(cluster_dir, work)
    archive = work / "out" / "bundles" / "node-0.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-100])  # truncated
    roots = tmp_path / "nodes"
    run = deploy(nodes, work, roots)
    assert run.returncode == 1
    assert "fail `hardway check`, nothing deployed" in run.stderr and "node-0" in run.stderr
    assert "Traceback" not in run.stderr and not roots.exists()


@pytest.mark.slow
def test_a_jump_host_reaches_a_node_the_workstation_cannot(tmp_path, run_cli):
    """Three namespaces: the workstation, a bastion, the node. The workstation reaches only the
    bastion (10.9.0.2) and the bastion the node (10.240.0.20); the bastion forwards nothing, so only
    `ssh.jump` gets through. The bastion's key is checked against known_hosts, the node's pinned."""
    from hardway.lab import sshd as sshd_mod
    from helpers import need_namespaces, need_sshd
    need_namespaces()
    need_sshd()
    need_fabric()
    tag = os.urandom(3).hex()
    ws, bastion, node = f"hwjw-{tag}", f"hwjb-{tag}", f"hwjn-{tag}"
    ip = lambda *a: subprocess.run(["ip", *a], check=True)  # noqa: E731
    try:
        for ns in (ws, bastion, node):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ws, "link", "add", "a0", "type", "veth", "peer", "name", "a1", "netns", bastion)
        ip("-n", bastion, "link", "add", "b0", "type", "veth", "peer", "name", "b1", "netns", node)
        for ns, dev, addr in ((ws, "a0", "10.9.0.1/24"), (bastion, "a1", "10.9.0.2/24"),
                              (bastion, "b0", "10.240.0.1/24"), (node, "b1", "10.240.0.20/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        # no route from the workstation to 10.240.0.0/24, and the bastion forwards nothing anyway
        subprocess.run(["ip", "netns", "exec", bastion, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
        key = sshd_mod.client_key(tmp_path / "id")
        jump = sshd_mod.start(tmp_path / "bastion", enter=sshd_mod.netns_command(bastion), address="10.9.0.2",
                              authorized=[key.public])
        target = sshd_mod.start(tmp_path / "node", enter=sshd_mod.netns_command(node), address="10.240.0.20",
                                authorized=[key.public])
        try:
            data = {"name": "jump", "pki": {"keyAlgorithm": "ECDSA-P256"},
                    "ssh": {"identity": str(key.private)},
                    "nodes": [{"name": "server", "address": "10.240.0.20", "roles": ["controller"],
                               "ssh": {"hostKeys": target.host_keys}}]}
            (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            assert run_cli(["bundle"], cwd=tmp_path).returncode == 0
            known = tmp_path / "known_hosts"
            known.write_text("".join(f"10.9.0.2 {k}\n" for k in jump.host_keys))

            def go():
                return subprocess.run(sshd_mod.netns_command(ws) + [
                    sys.executable, "-m", "hardway", "deploy", "--remote-root", f"{tmp_path}/{{node}}/root",
                    "--known-hosts", str(known)], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
            direct = go()
            assert direct.returncode == 1 and "cannot connect to root@10.240.0.20:22" in direct.stdout, direct.stdout
            data["ssh"]["jump"] = "root@10.9.0.2"
            (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            through = go()
            assert through.returncode == 0, through.stdout + through.stderr
            assert rows(through.stdout)["server"][0] == "upload+install"
            assert (tmp_path / "server/root/etc/kubernetes/pki/kube-apiserver.crt").is_file()
            # the node saw the bastion's address, not the workstation's
            assert "Accepted publickey for root from 10.240.0.1 " in target.log.read_text()
            # the bastion's key is checked too: a known_hosts without it stops the run
            known.write_text("")
            data["nodes"][0]["ssh"]["hostKeys"] = target.host_keys
            refused = go()
            assert refused.returncode == 1 and "unknown host key for 10.9.0.2" in refused.stdout, refused.stdout
        finally:
            jump.stop()
            target.stop()
    finally:
        for ns in (ws, bastion, node):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize("args, message", [
    (["deploy", "--parallel", "0"], "--parallel 0: give at least 1"),
    (["deploy", "--remote-root", "staging/{node}"], "--remote-root 'staging/{node}': give an absolute directory"),
    (["deploy", "--role", "master"], "--role master: no such role; the roles are controller, worker, loadbalancer"),
    (["deploy", "--only", "servr"], "--only servr: no such node in the spec; did you mean server?"),
    (["lab.up", "--network-only", "--installed"], "--network-only and --installed are the two halves"),
])
def test_bad_deploy_arguments_are_explained(tmp_path, run_cli, example_path, args, message):
    if args[0] == "deploy":
        need_fabric()
    shutil.copy(example_path("kthw"), tmp_path / "cluster.yaml")
    if "--role" in args or "--only" in args:
        assert run_cli(["bundle"], cwd=tmp_path).returncode == 0
    run = run_cli(args, cwd=tmp_path)
    assert run.returncode != 0 and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_an_install_sh_failure_shows_its_output_and_records_nothing(nodes, cluster_dir, tmp_path):
    roots = tmp_path / "nodes"
    blocker = roots / "node-1" / "root" / "etc/kubernetes/kubelet-config.yaml"
    blocker.mkdir(parents=True)  # a directory where the bundle installs a file
    run = deploy(nodes, cluster_dir, roots)
    assert run.returncode == 1
    got = rows(run.stdout)
    assert got["node-1"] == ("upload+install", "failed: install.sh exit 1")
    assert got["server"][1].startswith("ok") and got["node-0"][1].startswith("ok")
    tail = run.stdout.split("--- node-1: the end of its output", 1)[1]
    assert f"{blocker} is a directory; expected a file" in tail
    assert "deploy: 1 failed: node-1" in run.stdout
    assert not (roots / "node-1/root/var/lib/hardway/deploy/installed").exists()
    blocker.rmdir()
    again = deploy(nodes, cluster_dir, roots)
    assert again.returncode == 0
    assert rows(again.stdout)["node-1"][0] == "install"  # the archive is there already
    assert (blocker).is_file()


@pytest.mark.slow
def test_an_archive_that_is_a_link_is_not_read(nodes, cluster_dir, tmp_path):
    work = tmp_path / "c"
    shutil.copytree(cluster_dir, work)
    archive = work / "out" / "bundles" / "node-0.tar.gz"
    elsewhere = tmp_path / "elsewhere.tar.gz"
    archive.rename(elsewhere)
    archive.symlink_to(elsewhere)  # the same bytes, through a link
    roots = tmp_path / "nodes"
    run = deploy(nodes, work, roots)
    assert run.returncode == 1, run.stderr
    assert "out/bundles/node-0.tar.gz is a symbolic link; deploy follows no link" in run.stderr
    assert not roots.exists()
