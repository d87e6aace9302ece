"""`hardway ansible`: the inventory and playbook it writes, checked by Ansible's own programs
(ansible-inventory, ansible-playbook --syntax-check / --list-hosts), and a real ansible-playbook run
through a real jump host into a real sshd (Debian's, in a network namespace: tests/sshd_helpers.py)
that installs a node from its bundle, then a second run that changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO, need_tool

ANSIBLE_HOW = "pip install -e '.[test]'  (or: pip install 'ansible-core==2.19.*')"
JUMP = "10.240.9.9"  # the bastion, an sshd of its own
# The "node" is this machine seen through sshd: its Debian python3 runs the modules (interpreter
# discovery would find pyenv's shims first here, which name versions not installed).
NODE_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def need_ansible() -> dict[str, str]:
    return {tool: need_tool(tool, ANSIBLE_HOW) for tool in ("ansible-playbook", "ansible-inventory")}


def hardway(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "hardway", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def ansible_env(tmp: Path) -> dict[str, str]:
    """Ansible's state in the test's directory, never in root's home (control sockets, temp files)."""
    home = tmp / "ansible-home"
    return dict(os.environ, ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
                ANSIBLE_SSH_CONTROL_PATH_DIR=str(home / "cp"), ANSIBLE_REMOTE_TMP=str(tmp / "remote-tmp"),
                ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                ANSIBLE_PYTHON_INTERPRETER=NODE_PYTHON, ANSIBLE_CONFIG=str(tmp / "no-ansible.cfg"))


def ha_spec(**ssh) -> dict:
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data.update(ssh)
    return data


# A key as ssh-keygen writes one (the spec checks its wire format): made once for the module.
@pytest.fixture(scope="module")
def pinned(tmp_path_factory) -> list[str]:
    need_tool("ssh-keygen", "apt-get install -y openssh-client")
    d = tmp_path_factory.mktemp("hostkeys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(d / "k")], check=True)
    return [" ".join((d / "k.pub").read_text().split()[:2])]


def every_field_spec(pinned: list[str]) -> dict:
    """ha with a controller+worker node, and a non-default value in every ssh field (cluster and node)."""
    data = ha_spec(ssh={"user": "deployer", "port": 2200, "identity": "~/.ssh/hardway_ed25519",
                        "jump": "jumper@bastion.example.com:2022"})
    nodes = data["nodes"]
    nodes[1]["roles"] = ["controller", "worker"]
    nodes[2]["ssh"] = {"host": "c1.mgmt.example.com", "user": "ops", "port": 2201, "identity": "/etc/hardway/c1_key",
                       "jump": "[fd00::9]:22", "hostKeys": pinned}
    return data


def test_inventory_maps_every_ssh_field(tmp_path, pinned):
    tools = need_ansible()
    spec = tmp_path / "cluster.yaml"
    data = every_field_spec(pinned)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
    d = tmp_path / "out" / "ansible"
    listed = json.loads(subprocess.run([tools["ansible-inventory"], "-i", str(d / "inventory.yml"), "--list"],
                                       capture_output=True, text=True, check=True, env=ansible_env(tmp_path)).stdout)
    names = [n["name"] for n in data["nodes"]]
    roles = {n["name"]: n["roles"] for n in data["nodes"]}
    for group in ("loadbalancer", "controller", "worker"):
        assert sorted(listed[group]["hosts"]) == sorted(n for n in names if group in roles[n]), group
    assert sorted(listed["hardway"]["children"]) == ["controller", "loadbalancer", "worker"]
    hv = listed["_meta"]["hostvars"]
    assert set(hv) == set(names)
    by_name = {n["name"]: n for n in data["nodes"]}
    # a node with no ssh block of its own: its address, and the cluster's user, port, identity and jump
    lb = hv["lb"]
    assert lb["ansible_host"] == by_name["lb"]["address"]
    assert (lb["ansible_port"], lb["ansible_user"], lb["ansible_ssh_private_key_file"]) == \
        (2200, "deployer", "~/.ssh/hardway_ed25519")
    assert shlex.split(lb["ansible_ssh_common_args"]) == [
        "-o", "StrictHostKeyChecking=yes", "-o", "ProxyJump=jumper@bastion.example.com:2022"]
    assert lb["ansible_become"] is True and lb["ansible_host_key_checking"] is True
    # the node's own block wins field by field; its pinned keys go to known_hosts, and only there
    c1 = hv["controller-1"]
    assert (c1["ansible_host"], c1["ansible_port"], c1["ansible_user"], c1["ansible_ssh_private_key_file"]) == \
        ("c1.mgmt.example.com", 2201, "ops", "/etc/hardway/c1_key")
    assert shlex.split(c1["ansible_ssh_common_args"]) == [
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=\"{{ inventory_dir | replace('%', '%%') }}/known_hosts\"",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ProxyJump=[fd00::9]:22"]
    known = [line for line in (d / "known_hosts").read_text().splitlines() if not line.startswith("#")]
    assert known == [f"[c1.mgmt.example.com]:2201 {pinned[0]}"]
    # what the playbook reads: each archive's sha256 (computed here), the API URL, the manifests in order
    for name in names:
        archive = tmp_path / "out" / "bundles" / f"{name}.tar.gz"
        assert hv[name]["hardway_bundle_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    ws = tmp_path / "out" / "bundles" / "workstation.tar.gz"
    assert hv["lb"]["hardway_workstation_sha256"] == hashlib.sha256(ws.read_bytes()).hexdigest()
    with tarfile.open(ws) as tar:
        manifests = sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if "/manifests/" in m.name and m.isfile())
    assert manifests and hv["lb"]["hardway_manifests"] == manifests
    assert hv["lb"]["hardway_api_url"] == f"https://{data['apiServer']['endpoint']}:6443"
    assert hv["lb"]["hardway_bundles_dir"] == "{{ inventory_dir }}/../bundles"
    # nothing secret: no private key material anywhere in what was written
    for f in d.iterdir():
        assert "PRIVATE KEY" not in f.read_text(), f


def test_playbook_syntax_and_order(tmp_path, pinned):
    tools = need_ansible()
    spec = tmp_path / "cluster.yaml"
    data = every_field_spec(pinned)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
    d = tmp_path / "out" / "ansible"
    base = [tools["ansible-playbook"], "-i", str(d / "inventory.yml"), str(d / "playbook.yml")]
    syntax = subprocess.run(base + ["--syntax-check"], capture_output=True, text=True, env=ansible_env(tmp_path))
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    assert "WARNING" not in syntax.stderr, syntax.stderr
    listed = subprocess.run(base + ["--list-hosts"], capture_output=True, text=True, env=ansible_env(tmp_path))
    assert listed.returncode == 0, listed.stderr
    plays = re.findall(r"play #\d+ \(([^)]*)\): ([^\t\n]*)\s*TAGS: \[[^\]]*\]\s*pattern: \[[^\]]*\]\s*hosts \(\d+\):\n((?:\s{6}\S+\n?)*)",
                       listed.stdout)
    hosts = [(title, sorted(h.split())) for _, title, h in plays]
    assert [pattern for pattern, _, _ in plays] == ["loadbalancer", "controller", "controller", "worker:!controller"]
    both = data["nodes"][1]["name"]  # controller+worker: installed with the controllers, not again
    roles = {n["name"]: n["roles"] for n in data["nodes"]}
    assert [t.split()[0] for t, _ in hosts] == ["Load", "Controllers", "The", "Workers"] and "/readyz" in hosts[2][0]
    assert hosts[0][1] == sorted(n for n, r in roles.items() if "loadbalancer" in r)
    assert hosts[1][1] == sorted(n for n, r in roles.items() if "controller" in r) and both in hosts[1][1]
    assert hosts[3][1] == sorted(n for n, r in roles.items() if r == ["worker"]) and both not in hosts[3][1]


def test_rerun_writes_nothing_and_any_out_dir_gets_the_same_bytes(tmp_path):
    need_ansible()
    hardway("ansible", "--spec", str(REPO / "examples" / "kthw.yaml"), "--out", "out", cwd=tmp_path)
    d = tmp_path / "out" / "ansible"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()}
    assert sorted(before) == ["hardway-node.yml", "inventory.yml", "known_hosts", "playbook.yml"]
    again = hardway("ansible", "--spec", str(REPO / "examples" / "kthw.yaml"), "--out", "out", cwd=tmp_path)
    assert "0 file(s) written" in again.stdout, again.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()} == before
    # another output directory, the same store: the same bytes (paths are relative to the inventory)
    import shutil
    shutil.copytree(tmp_path / "out" / "pki", tmp_path / "elsewhere" / "out2" / "pki")
    hardway("ansible", "--spec", str(REPO / "examples" / "kthw.yaml"), "--out", "elsewhere/out2", cwd=tmp_path)
    other = tmp_path / "elsewhere" / "out2" / "ansible"
    assert {p.name: p.read_bytes() for p in other.iterdir()} == {k: v[0] for k, v in before.items()}
    # clean removes what it wrote
    hardway("clean", "--out", "out", cwd=tmp_path)
    assert not d.exists()


def test_bad_input_writes_nothing(tmp_path):
    spec = tmp_path / "cluster.yaml"
    data = ha_spec(ssh={"prot": 22})
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    bad = hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "did you mean 'port'" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("mine\n")
    good = tmp_path / "good.yaml"
    good.write_text((REPO / "examples" / "kthw.yaml").read_text())
    bad = hardway("ansible", "--spec", str(good), "--out", "out", "--dir", "afile", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "afile" in bad.stderr and "--dir" in bad.stderr and "Traceback" not in bad.stderr
    assert (tmp_path / "afile").read_text() == "mine\n" and not (tmp_path / "out").exists()
    # another stage's directory: its record (what `bundle` may delete) must stay its own
    hardway("bundle", "--spec", str(good), "--out", "out", cwd=tmp_path)
    record = (tmp_path / "out" / ".bundles.written").read_bytes()
    for inside in ("out/bundles", "out/pki/x", "out"):
        bad = hardway("ansible", "--spec", str(good), "--out", "out", "--dir", inside, cwd=tmp_path, check=False)
        assert bad.returncode == 1 and f"--dir {inside}" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert (tmp_path / "out" / ".bundles.written").read_bytes() == record
    assert not (tmp_path / "out" / "bundles" / "inventory.yml").exists() and not (tmp_path / "out" / "ansible").exists()


# ---------------------------------------------------------------- a real run over SSH ------------

def _installed(bundle: Path, root: Path) -> list[str]:
    """What differs between the bundle's rootfs and the installed root (content and mode)."""
    problems = []
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/", 2)
            if len(parts) == 3 and parts[1] == "rootfs" and m.isfile():
                target = root / parts[2]
                if not target.is_file():
                    problems.append(f"{parts[2]}: missing")
                elif target.read_bytes() != tar.extractfile(m).read():
                    problems.append(f"{parts[2]}: content")
                elif target.stat().st_mode & 0o777 != m.mode & 0o777:
                    problems.append(f"{parts[2]}: mode {target.stat().st_mode & 0o777:o} != {m.mode & 0o777:o}")
    return problems


def _recap(output: str, host: str) -> dict[str, int]:
    m = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", output, re.M)
    assert m, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.mark.slow
def test_ansible_playbook_installs_a_node_through_a_jump_host(tmp_path):
    """The ha example's load balancer, reached on its own ssh address and port through a bastion,
    with its host keys pinned in the spec: installed under a staging root, recorded as deploy
    records it; a second run changes nothing; a wrong pinned key stops it before anything."""
    from sshd_helpers import ssh_nodes
    tools = need_ansible()
    data = ha_spec()
    lb = next(n for n in data["nodes"] if "loadbalancer" in n["roles"])
    mgmt = "10.240.100.10"  # the node's ssh address, not its cluster address
    with ssh_nodes(tmp_path / "ssh", {"lb": mgmt, "bastion": JUMP}) as nodes:
        server = nodes.start("lb", port=2222)
        data["ssh"] = {"port": 2222, "identity": str(nodes.key.private), "jump": f"root@{JUMP}:22", "user": "root"}
        lb["ssh"] = {"host": mgmt, "hostKeys": server.host_keys}
        spec = tmp_path / "cluster.yaml"
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
        d = tmp_path / "out" / "ansible"
        # the bastion is the user's business (their known_hosts): here an ssh config of the test's own
        bastion_known = tmp_path / "bastion_known_hosts"
        bastion_known.write_text("".join(f"{JUMP} {k}\n" for k in nodes.servers["bastion"].host_keys))
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(f"Host {JUMP}\n  UserKnownHostsFile {bastion_known}\n  IdentityFile {nodes.key.private}\n"
                              "  IdentitiesOnly yes\n  BatchMode yes\n")
        root = tmp_path / "roots" / "{node}"
        run = nodes.inside([tools["ansible-playbook"], "-i", str(d / "inventory.yml"), str(d / "playbook.yml"),
                            "--limit", lb["name"], "--ssh-extra-args", f"-F {ssh_config}",
                            "-e", f"hardway_root={root}", "-e", "hardway_start=false"])
        first = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        recap = _recap(first.stdout, lb["name"])
        assert recap["failed"] == 0 and recap["unreachable"] == 0 and recap["changed"] > 0, first.stdout[-3000:]

        archive = tmp_path / "out" / "bundles" / f"{lb['name']}.tar.gz"
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        node_root = tmp_path / "roots" / lb["name"]
        assert _installed(archive, node_root) == []
        assert (node_root / "etc/haproxy/haproxy.cfg").is_file()
        state = node_root / "var/lib/hardway/deploy"
        assert (state / "installed").read_text() == f"{digest} {lb['name']} installed\n"
        kept = state / "bundles" / digest / f"{lb['name']}.tar.gz"
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == digest
        assert (state / "bundles" / digest / lb["name"] / "install.sh").is_file()
        # it logged into the bastion (nothing else does), and from there into the node's sshd on its port
        assert "Accepted publickey for root" in nodes.servers["bastion"].log.read_text()
        assert f"on {mgmt} port 2222" in server.log.read_text() and "Accepted publickey for root" in server.log.read_text()

        second = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        assert second.returncode == 0, second.stdout[-4000:]
        again = _recap(second.stdout, lb["name"])
        assert again["changed"] == 0 and again["failed"] == 0, second.stdout[-3000:]
        assert re.search(r"TASK \[Run the bundle's install.sh\] \*+\nskipping: \[lb\]", second.stdout), second.stdout[-3000:]

        # an archive that is not the one the inventory names: refused before anything is done
        (state / "installed").unlink()
        original = archive.read_bytes()
        try:
            archive.write_bytes(original + b"\0")
            tampered = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        finally:
            archive.write_bytes(original)
        assert tampered.returncode != 0 and "is not the archive this inventory was written for" in tampered.stdout
        assert not (state / "installed").exists()

        # the node presents another key than the pinned one: OpenSSH refuses, nothing is done
        other = nodes.start("lb", port=2222)  # a fresh directory would make new keys: use the bastion's
        assert other.host_keys == server.host_keys
        lb["ssh"]["hostKeys"] = nodes.servers["bastion"].host_keys
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
        hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
        refused = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        assert refused.returncode != 0
        assert _recap(refused.stdout, lb["name"])["unreachable"] == 1, refused.stdout[-3000:]
        assert "Host key verification failed" in refused.stdout + refused.stderr, refused.stdout[-3000:]
        assert not (state / "installed").exists()


@pytest.mark.slow
def ansible_for(tmp_path: Path, data: dict, mgmt: dict[str, str], nodes) -> Path:
    """Point the nodes named in `mgmt` at their test sshd (address, pinned host keys, the test's key),
    write the spec and run `hardway ansible` on it; the directory it wrote."""
    data["ssh"] = {"identity": str(nodes.key.private)}
    for n in data["nodes"]:
        if n["name"] in mgmt:
            n["ssh"] = {"host": mgmt[n["name"]], "hostKeys": nodes.servers[n["name"]].host_keys}
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
    return tmp_path / "out" / "ansible"


def test_a_worker_down_stops_only_itself(tmp_path):
    """kthw's two workers, one at a time (hardway_parallel=1): node-1's sshd is down, node-0 is
    still installed; the run exits non-zero naming node-1 unreachable. Then, node-1 back, a re-run
    installs node-1 only (node-0 already has its bundle: changed=0)."""
    from sshd_helpers import ssh_nodes
    tools = need_ansible()
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
    mgmt = {"node-0": "10.240.101.20", "node-1": "10.240.101.21"}
    with ssh_nodes(tmp_path / "ssh", mgmt) as nodes:
        d = ansible_for(tmp_path, data, mgmt, nodes)
        nodes.servers["node-1"].stop()
        run = nodes.inside([tools["ansible-playbook"], "-i", str(d / "inventory.yml"), str(d / "playbook.yml"),
                            "--limit", "worker", "-e", f"hardway_root={tmp_path / 'roots' / '{node}'}",
                            "-e", "hardway_start=false", "-e", "hardway_parallel=1"])
        first = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        assert first.returncode != 0, first.stdout[-3000:]
        assert _recap(first.stdout, "node-1")["unreachable"] == 1, first.stdout[-3000:]
        done = _recap(first.stdout, "node-0")
        assert done["failed"] == 0 and done["changed"] > 0, first.stdout[-3000:]
        for name in mgmt:
            archive = tmp_path / "out" / "bundles" / f"{name}.tar.gz"
            record = tmp_path / "roots" / name / "var/lib/hardway/deploy/installed"
            if name == "node-0":
                assert _installed(archive, tmp_path / "roots" / name) == []
                assert record.read_text() == f"{hashlib.sha256(archive.read_bytes()).hexdigest()} {name} installed\n"
            else:
                assert not (tmp_path / "roots" / name).exists()
        nodes.start("node-1")  # the same directory: the same, pinned, host keys
        second = subprocess.run(run, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600)
        assert second.returncode == 0, second.stdout[-3000:]
        assert _recap(second.stdout, "node-0")["changed"] == 0 and _recap(second.stdout, "node-1")["changed"] > 0
        assert _installed(tmp_path / "out" / "bundles" / "node-1.tar.gz", tmp_path / "roots" / "node-1") == []


def test_a_spec_value_is_never_a_template_to_ansible(tmp_path):
    """The spec's identity path may hold any printable text: Ansible takes it as text (`!unsafe`),
    so a `{{ lookup('pipe', ...) }}` in it runs nothing on this machine."""
    tools = need_ansible()
    marker = tmp_path / "ran"
    identity = "/keys/{{ lookup('pipe', 'touch " + str(marker) + "') }}"
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
    data["ssh"] = {"identity": identity}
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    hardway("ansible", "--spec", str(spec), "--out", "out", cwd=tmp_path)
    show = tmp_path / "show.yml"
    show.write_text("- hosts: server\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.debug: {msg: \"key={{ ansible_ssh_private_key_file }}\"}\n")
    run = subprocess.run([tools["ansible-playbook"], "-i", str(tmp_path / "out/ansible/inventory.yml"), str(show)],
                         capture_output=True, text=True, env=ansible_env(tmp_path), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f'"msg": "key={identity}"' in run.stdout, run.stdout
    assert not marker.exists()


@pytest.mark.slow
def test_a_load_balancer_down_stops_the_run_before_the_workers(tmp_path):
    """As deploy: the workers need the API, which goes through the load balancer; with its sshd
    down the run ends unreachable there, and the worker is not attempted."""
    from sshd_helpers import ssh_nodes
    tools = need_ansible()
    data = ha_spec()
    mgmt = {"lb": "10.240.102.10", "node-0": "10.240.102.20"}
    with ssh_nodes(tmp_path / "ssh", mgmt) as nodes:
        d = ansible_for(tmp_path, data, mgmt, nodes)
        nodes.servers["lb"].stop()
        run = subprocess.run(nodes.inside([
            tools["ansible-playbook"], "-i", str(d / "inventory.yml"), str(d / "playbook.yml"), "--limit", "lb,node-0",
            "-e", f"hardway_root={tmp_path / 'roots' / '{node}'}"]), capture_output=True, text=True,
            env=ansible_env(tmp_path), timeout=600)
        assert run.returncode != 0, run.stdout[-3000:]
        assert _recap(run.stdout, "lb")["unreachable"] == 1, run.stdout[-3000:]
        assert "PLAY [Workers]" not in run.stdout and not re.search(r"^node-0\s*:", run.stdout, re.M), run.stdout[-3000:]
        assert not (tmp_path / "roots").exists()
        assert "Accepted publickey" not in (tmp_path / "ssh" / "node-0" / "sshd.log").read_text()
