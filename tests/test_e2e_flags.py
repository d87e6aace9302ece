"""Every flag in every generated unit is accepted by the binary of the pinned version.

Two independent checks per binary: each flag name appears in `<binary> --help`, and the binary
parses the unit's whole command line (types and values included) when asked for `--version`,
which every Kubernetes component and etcd answer only after parsing all their flags. No root needed.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache

import pytest

from hardway import resources, spec
from hardway.binaries import BINARIES
from helpers import need_binaries
from hardway.lab.lab import DONE_BY_THE_LAB
from hardway.lab.units import parse_flags, parse_unit

pytestmark = [pytest.mark.e2e]

EXAMPLES = ("kthw", "ha")


def _units(example: str):
    """(node, unit name, ServiceUnit) for every unit of every node of the example."""
    from hardway.pki import generate_materials
    from hardway.render import iter_node_plans
    cluster = spec.load(resources.example_path(example))
    materials = generate_materials(cluster)
    seen = []
    for plan in iter_node_plans(cluster, materials):
        for unit_name in plan.units:
            if unit_name in DONE_BY_THE_LAB:  # several ExecStart= lines of `ip route`: no flags to check
                continue
            f = plan.file(f"/etc/systemd/system/{unit_name}")
            seen.append((plan.node, unit_name, parse_unit(f.data.decode(), unit_name)))
    return cluster, seen


@cache
def _help(path: str) -> str:
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_unit_flag_is_known_to_its_binary(example):
    cluster, units = _units(example)
    found = need_binaries(str(cluster.version), names=[b for b in BINARIES if b not in ("kubectl", "etcdctl")])
    checked = set()
    problems = []
    for node, unit_name, unit in units:
        binary = unit.binary
        if binary not in found:
            continue  # containerd, HAProxy, iptables: not flag-style Kubernetes programs
        checked.add(binary)
        text = _help(str(found[binary]))
        for flag, _ in parse_flags(list(unit.argv[1:])):
            if not re.search(rf"(?<![\w-])--{re.escape(flag)}(?![\w-])", text):
                problems.append(f"{node}/{unit_name}: --{flag} is not in `{binary} --help` ({cluster.version})")
        parsed = subprocess.run([str(found[binary]), *unit.argv[1:], "--version"], capture_output=True, text=True, timeout=60)
        printed = parsed.stdout + parsed.stderr
        version = "etcd Version:" if binary == "etcd" else f"Kubernetes {cluster.version}"
        if parsed.returncode != 0 or version not in printed:
            problems.append(f"{node}/{unit_name}: `{binary}` rejects its command line: "
                            f"exit {parsed.returncode}: {printed.strip()[-500:]}")
    assert not problems, "\n".join(problems)
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    if cluster.workers:
        expected |= {"kubelet", "kube-proxy"}
    assert expected <= checked, f"no unit ran {sorted(expected - checked)}"


def test_the_check_catches_unknown_flags_and_bad_values():
    cluster = spec.load(resources.example_path("kthw"))
    found = need_binaries(str(cluster.version), names=["kube-apiserver", "etcd"])
    text = _help(str(found["kube-apiserver"]))
    assert re.search(r"(?<![\w-])--etcd-servers(?![\w-])", text)
    assert not re.search(r"(?<![\w-])--etcd-server(?![\w-])", text), "a prefix must not count as the flag"
    for argv in ([found["kube-apiserver"], "--no-such-flag=1"], [found["kube-apiserver"], "--secure-port=abc"],
                 [found["etcd"], "--no-such-flag=1"], [found["etcd"], "--client-cert-auth=maybe"]):
        bad = subprocess.run([str(a) for a in argv] + ["--version"], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0, f"{argv[1:]} was accepted: --version must come after flag parsing"
