"""The spec's `ssh:` block and `targets()`: every field resolved from the node's block, else the
cluster's, else the default; every bad value named with its field, its line and what is allowed.
Host keys are real ones made by ssh-keygen for the test."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from hardway import spec
from hardway.deploy.targets import Target, phase, targets
from hardway.errors import SpecError
from helpers import need_tool

BASE = {
    "name": "lab",
    "nodes": [
        {"name": "lb", "address": "10.240.0.10", "roles": ["loadbalancer"]},
        {"name": "c0", "address": "10.240.0.11", "roles": ["controller"]},
        {"name": "w0", "address": "10.240.0.20", "roles": ["worker"], "fqdn": "w0.example.com"},
    ],
    "apiServer": {"endpoint": "10.240.0.10"},
}


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory) -> dict[str, str]:
    """Public host keys of each type, made by OpenSSH's ssh-keygen."""
    need_tool("ssh-keygen", "apt-get install -y openssh-client")
    d = tmp_path_factory.mktemp("keys")
    keys = {}
    for kind, extra in (("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"])):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"test@{kind}", "-f",
                        str(d / kind)], check=True)
        keys[kind] = (d / f"{kind}.pub").read_text().strip()
        keys[kind + "-private"] = (d / kind).read_text()
    return keys


def load(data: dict) -> spec.Cluster:
    return spec.loads(yaml.safe_dump(data, sort_keys=False), source="lab.yaml")


def problems(data: dict) -> str:
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(SpecError) as raised:
        spec.loads(text, source="lab.yaml")
    message = str(raised.value)
    assert "Traceback" not in message and "Input should be" not in message
    return message


def test_without_an_ssh_block_every_default_applies():
    ts = targets(load(BASE))
    assert [t.node for t in ts] == ["lb", "c0", "w0"]
    # host: the node's address, not its fqdn (docs/deploy.md says why)
    assert [(t.host, t.port, t.user, t.identity, t.jump, t.host_keys) for t in ts] == [
        (n["address"], 22, "root", None, None, ()) for n in BASE["nodes"]]
    assert [phase(t.roles) for t in ts] == ["loadbalancer", "controller", "worker"]


def test_every_field_resolves_node_then_cluster_then_default(host_keys):
    data = copy.deepcopy(BASE)
    data["ssh"] = {"user": "deploy", "port": 2222, "identity": "~/.ssh/hardway_ed25519",
                   "jump": "ops@bastion.example.com:2200"}
    data["nodes"][1]["ssh"] = {"host": "c0.mgmt.example.com", "user": "admin", "port": 22022,
                               "identity": "/etc/hardway/c0_key", "jump": "[fd00::1]:2201",
                               "hostKeys": [host_keys["ed25519"], host_keys["ecdsa"]]}
    data["nodes"][2]["ssh"] = {"hostKeys": [host_keys["rsa"]]}
    lb, c0, w0 = targets(load(data))
    assert lb == Target("lb", frozenset({"loadbalancer"}), "10.240.0.10", 2222, "deploy", "~/.ssh/hardway_ed25519",
                        lb.jump, ())
    assert (lb.jump.user, lb.jump.host, lb.jump.port, str(lb.jump)) == (
        "ops", "bastion.example.com", 2200, "ops@bastion.example.com:2200")
    assert (c0.host, c0.port, c0.user, c0.identity) == ("c0.mgmt.example.com", 22022, "admin", "/etc/hardway/c0_key")
    assert (c0.jump.user, c0.jump.host, c0.jump.port, str(c0.jump)) == (None, "fd00::1", 2201, "[fd00::1]:2201")
    # pinned keys: type and base64 as ssh-keygen wrote them, the comment dropped
    assert [str(k) for k in c0.host_keys] == [" ".join(host_keys[k].split()[:2]) for k in ("ed25519", "ecdsa")]
    assert (w0.host, w0.port, w0.user, w0.jump, [str(k) for k in w0.host_keys]) == (
        "10.240.0.20", 2222, "deploy", lb.jump, [" ".join(host_keys["rsa"].split()[:2])])
    assert c0.known_hosts_name == "[c0.mgmt.example.com]:22022" and targets(load(BASE))[0].known_hosts_name == "10.240.0.10"
    assert c0.to_dict()["jump"] == "[fd00::1]:2201"


def test_the_ssh_block_changes_no_generated_value(host_keys):
    """How a node is reached is no part of what it gets: the bundles' input digests (which decide
    what `bundle` re-renders) read the Cluster without it."""
    from hardway.bundle.inputs import canonical
    data = copy.deepcopy(BASE)
    data["ssh"] = {"user": "deploy", "port": 2222, "jump": "bastion"}
    data["nodes"][2]["ssh"] = {"host": "w0.mgmt.example.com", "hostKeys": [host_keys["ed25519"]]}
    a, b = load(BASE), load(data)
    assert b.ssh.user == "deploy" and a.ssh.user is None and b.nodes[2].ssh.host == "w0.mgmt.example.com"
    assert a == b
    assert canonical(a) == canonical(b)
    assert canonical(a.nodes[2]) == canonical(b.nodes[2])


def _with(where: str, block: dict) -> dict:
    data = copy.deepcopy(BASE)
    if where == "cluster":
        data["ssh"] = block
    else:
        data["nodes"][1]["ssh"] = block
    return data


@pytest.mark.parametrize("where", ["cluster", "node"])
@pytest.mark.parametrize("field, value, fragments", [
    ("user", "Root", ["user: 'Root' is not a login name", "lowercase letter"]),
    ("user", "a b", ["user: 'a b' is not a login name"]),
    ("port", 0, ["port: 0 is not a TCP port (1-65535)"]),
    ("port", 65536, ["port: 65536 is not a TCP port (1-65535)"]),
    ("port", "22", ["port: must be a whole number, got '22'; remove the quotes"]),
    ("identity", "id_ed25519", ["identity: 'id_ed25519' is not an absolute path or one under your home", "~/.ssh/id_ed25519"]),
    ("identity", "~/../etc/shadow", ["without '..'"]),
    ("identity", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
     ["identity: this is key material, not a path; never put a key in the spec"]),
    ("jump", "bastion:ssh", ["jump: 'bastion:ssh' is not [user@]host[:port]", "the port 'ssh' is not a number"]),
    ("jump", "fd00::1", ["write an IPv6 host in brackets"]),
    ("jump", "a@b,c@d", ["one jump host only"]),
    ("jump", "Ops@bastion", ["the user 'Ops' is not a login name"]),
    ("jump", "bastion:70000", ["70000 is not a TCP port"]),
    ("jump", "bad_host!", ["the host 'bad_host!' is neither an IP address nor a DNS name"]),
])
def test_bad_ssh_values_are_explained(where, field, value, fragments):
    message = problems(_with(where, {field: value}))
    path = "ssh." if where == "cluster" else "nodes[1].ssh."
    assert path + field in message, message
    for f in fragments:
        assert f in message, message
    assert "lab.yaml: line " in message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("field, value", [("user", "deploy"), ("user", "_svc"), ("port", 1), ("port", 65535),
                                          ("identity", "/root/.ssh/id_rsa"), ("identity", "~/keys/my key"),
                                          ("jump", "bastion"), ("jump", "10.0.0.1:2"), ("jump", "a@[fd00::2]")])
def test_good_ssh_values_load(field, value):
    assert getattr(load(_with("cluster", {field: value})).ssh, field) is not None


def test_host_keys_both_sides(host_keys):
    ok = load(_with("node", {"hostKeys": [host_keys["ed25519"]]}))
    assert ok.nodes[1].ssh.host_keys[0].type == "ssh-ed25519"
    ed = host_keys["ed25519"].split()
    cases = [
        (ed[0] + " " + ed[1][:-7], "not base64"),  # cut inside a base64 quantum
        ("ssh-dss AAAAB3NzaC1kc3M=", "unknown host key type 'ssh-dss'; allowed: ssh-ed25519"),
        ("ecdsa-sha2-nistp256 " + ed[1], "does not start with 'ecdsa-sha2-nistp256'"),
        ("10.240.0.11 " + host_keys["ed25519"], "write the key without a host name"),
        ("ssh-ed25519", "is not a public host key line"),
        (host_keys["ed25519-private"], "this is a private key; never put a key in the spec"),
        ("ssh-ed25519 " + ed[1] + "AAAA", "has 54 bytes, an ed25519 key has 51"),  # 3 bytes too many
    ]
    for line, fragment in cases:
        message = problems(_with("node", {"hostKeys": [line]}))
        assert "nodes[1].ssh.hostKeys[0]" in message and fragment in message, (line, message)
    twice = problems(_with("node", {"hostKeys": [host_keys["ed25519"], host_keys["ed25519"]]}))
    assert "nodes[1].ssh.hostKeys[1]: the same key as hostKeys[0]" in twice


def test_host_and_host_keys_are_per_node_only(host_keys):
    for key, value in (("host", "10.0.0.1"), ("hostKeys", [host_keys["ed25519"]])):
        message = problems(_with("cluster", {key: value}))
        assert f"ssh.{key}" in message and "jump" in message, message  # the allowed keys are listed


def test_a_misspelt_key_gets_a_did_you_mean():
    message = problems(_with("node", {"identityFile": "~/.ssh/id"}))
    assert "nodes[1].ssh.identityFile" in message and "identity" in message, message


def test_bad_node_host_and_shared_host():
    message = problems(_with("node", {"host": "not a host"}))
    assert "nodes[1].ssh.host: 'not a host' is neither an IP address nor a DNS name" in message
    data = copy.deepcopy(BASE)
    data["nodes"][1]["ssh"] = {"host": "gw.example.com", "port": 2201}
    data["nodes"][2]["ssh"] = {"host": "gw.example.com", "port": 2201}
    message = problems(data)
    assert "nodes[2].ssh.host: gw.example.com:2201 is already how nodes[1] is reached" in message
    data["nodes"][2]["ssh"]["port"] = 2202
    assert [t.port for t in targets(load(data))][1:] == [2201, 2202]


def test_every_problem_at_once_with_lines():
    data = _with("cluster", {"user": "X", "port": 0})
    data["nodes"][2]["ssh"] = {"jump": "a,b"}
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(SpecError) as raised:
        spec.loads(text, source="lab.yaml")
    lines = str(raised.value).splitlines()
    assert len(lines) == 3
    numbers = {n for n, l in enumerate(text.splitlines(), 1) if "user: X" in l or "port: 0" in l or "jump: a,b" in l}
    assert {int(l.split("line ")[1].split(":")[0]) for l in lines} == numbers
