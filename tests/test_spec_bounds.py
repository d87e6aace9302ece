"""Bounded cost and no traceback for any spec, and values that no machine can use refused (issue 10).

Each case: one line naming the problem, exit 2 from the command, never a traceback, never the huge
value echoed back; each refused address next to a valid neighbour that is still accepted."""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardway import spec
from hardway.errors import SpecError
from helpers import REPO

BASE: dict[str, Any] = {
    "name": "lab",
    "pki": {"keyAlgorithm": "ECDSA-P256"},
    "nodes": [
        {"name": "server", "address": "10.240.0.10", "roles": ["controller"]},
        {"name": "node-0", "address": "10.240.0.20", "roles": ["worker"]},
    ],
}


def _spec(**changes) -> dict:
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        where = d
        for k in parents:
            where = where[int(k)] if isinstance(where, list) else where.setdefault(k, {})
        if isinstance(where, list):
            where[int(last)] = value
        else:
            where[last] = value
    return d


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        spec.loads(text)
    return e.value.problems


def _cli(tmp_path: Path, text: str | bytes, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    f = tmp_path / "cluster.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return subprocess.run([sys.executable, "-m", "hardway", "validate", "--spec", str(f), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


# ---------------------------------------------------------------- bounded cost ------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + \
    "name: lab\nnodes: [*i]\n"


def test_aliases_are_refused_at_once(tmp_path):
    start = time.monotonic()
    r = _cli(tmp_path, BILLION_LAUGHS)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "aliases" in r.stderr and len(r.stderr.splitlines()) == 1
    assert time.monotonic() - start < 20


def test_an_anchor_without_alias_is_refused_too():
    assert any("anchors" in p for p in _problems(yaml.safe_dump(BASE).replace("name: lab", "name: &n lab")))


@pytest.mark.parametrize("case", ["depth", "long-value", "huge-int", "file-size", "node-count"])
def test_every_bound_is_one_line_without_the_value(tmp_path, case):
    if case == "depth":
        text = yaml.safe_dump(BASE) + "extra: " + "[" * 990 + "]" * 990 + "\n"
    elif case == "long-value":
        text = yaml.safe_dump(_spec(name="x" * 5_000_000))
    elif case == "huge-int":
        text = yaml.safe_dump(BASE) + "apiServer: {port: " + "9" * 5000 + "}\n"
    elif case == "file-size":
        text = yaml.safe_dump(BASE) + "# " + "x" * (spec.MAX_SPEC_BYTES) + "\n"
    else:
        nodes = [{"name": f"n{i}", "address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "roles": ["worker"]}
                 for i in range(spec.MAX_NODES + 1)]
        text = yaml.safe_dump(_spec(nodes=BASE["nodes"][:1] + nodes))
    r = _cli(tmp_path, text)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.splitlines()) == 1 and len(r.stderr) < 600, r.stderr[:2000]


def test_the_supported_maximum_is_in_the_readme():
    assert f"{spec.MAX_NODES:,}" in (REPO / "README.md").read_text() or str(spec.MAX_NODES) in (REPO / "README.md").read_text()


def test_a_spec_error_never_echoes_more_than_a_line():
    problems = _problems(yaml.safe_dump(_spec(**{"network.podCIDR": "1" * 1000})))
    assert all(len(p) < 600 for p in problems)


# ---------------------------------------------------------------- values no machine can use -----

@pytest.mark.parametrize("address", ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"])
def test_unusable_node_addresses_are_refused(address):
    d = _spec(**{"nodes.1.address": address})
    if ":" in address:
        d["network"] = {"podCIDR": "fd00:200::/56", "serviceCIDR": "fd00:32::/112"}
        d["nodes"][0]["address"] = "fd00::10"
    problems = _problems(yaml.safe_dump(d))
    assert any("nodes[1].address" in p and address in p for p in problems), problems


def test_usable_neighbours_are_still_accepted():
    for address in ("10.240.0.21", "192.168.1.255", "223.255.255.254"):
        spec.loads(yaml.safe_dump(_spec(**{"nodes.1.address": address})))
    spec.loads(yaml.safe_dump(_spec(**{"apiServer.endpoint": "10.240.0.10"})))
    spec.loads(yaml.safe_dump(_spec(kubernetesVersion="v1.37.12")))


def test_a_controller_on_loopback_is_refused_a_worker_is_not():
    problems = _problems(yaml.safe_dump(_spec(**{"nodes.0.address": "127.0.0.1"})))
    assert any("nodes[0].address" in p and "loopback" in p for p in problems)
    spec.loads(yaml.safe_dump(_spec(**{"nodes.1.address": "127.0.0.2"})))


@pytest.mark.parametrize("endpoint", ["0.0.0.0", "255.255.255.255", "239.1.1.1"])
def test_an_unusable_endpoint_is_refused(endpoint):
    problems = _problems(yaml.safe_dump(_spec(**{"apiServer.endpoint": endpoint})))
    assert any("apiServer.endpoint" in p for p in problems), problems


def test_an_absurd_patch_version_is_refused():
    problems = _problems(yaml.safe_dump(_spec(kubernetesVersion="v1.37.99999999999999999999")))
    assert any("kubernetesVersion" in p for p in problems) and all(len(p) < 300 for p in problems)


# ---------------------------------------------------------------- fuzz ---------------------------

def _mutations(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        junk = rng.choice(["0.0.0.0", "&a x", "*a", "[", "{", "9" * 5000, "-1", "''", "~", "::", "255.255.255.255",
                           "fd00::/49", "v1.37.999999", "10.200.0.0/7", "true", "[" * 50, "\t", "x: y: z"])
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2 and ":" in lines[i]:
            key, _, _ = lines[i].partition(":")
            lines[i] = f"{key}: {junk}\n"
        elif op == 3:
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + junk + lines[i][pos:]
        elif op == 4:
            lines[i] = lines[i].replace(rng.choice("0123456789"), rng.choice("0123456789"))
        else:
            lines[i] = " " + lines[i]
    return "".join(lines)


def test_fuzzed_examples_never_crash_or_hang():
    """Random mutations of the examples, seeded: a clean SpecError or a valid Cluster, quickly."""
    rng = random.Random(10)
    texts = [(REPO / "examples" / f"{n}.yaml").read_text() for n in ("kthw", "ha")]
    deadline = time.monotonic() + 8
    runs = 0
    while time.monotonic() < deadline:
        text = _mutations(rng, rng.choice(texts))
        start = time.monotonic()
        try:
            spec.loads(text)
        except SpecError as e:
            assert e.problems and all(len(p) < 600 for p in e.problems)
        assert time.monotonic() - start < 5, text[:500]
        runs += 1
    assert runs > 50


# Mutations that always make a spec invalid, whatever else the text holds: each one breaks a rule the
# loader must enforce. The fuzz below runs the real command on them: never exit 0, never a traceback.
_BREAKERS = (
    ("name: ", "name: Not_A_Label-"),                 # the cluster name must be a DNS-1123 label
    ("roles: [", "roles: [astronaut, "),              # an unknown role
    ("address: ", "address: 999."),                   # not an IP address
    ("nodes:", "nodez:"),                             # an unknown key (and `nodes` missing)
    ("kubernetesVersion: v1.37.2", "kubernetesVersion: v0.1.2"),  # an unsupported minor
)


def test_fuzzed_invalid_specs_never_exit_zero(tmp_path):
    """Seeded random mutations on top of a change that breaks the spec for sure, through the real
    `hardway validate`: a non-zero exit and a message, no traceback, whatever the noise did."""
    import subprocess
    import sys
    rng = random.Random(11)
    texts = [(REPO / "examples" / f"{n}.yaml").read_text() for n in ("kthw", "ha")]
    deadline = time.monotonic() + 20
    runs = 0
    while time.monotonic() < deadline and runs < 40:
        text = rng.choice(texts)
        if rng.random() < 0.7:
            text = _mutations(rng, text)
        breakers = [b for b in _BREAKERS if b[0] in text]
        if not breakers:
            continue
        old, new = rng.choice(breakers)  # last, so no mutation can undo it
        text = text.replace(old, new, 1)
        f = tmp_path / f"fuzz{runs}.yaml"
        f.write_text(text)
        res = subprocess.run([sys.executable, "-m", "hardway", "validate", "--spec", str(f)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        assert res.returncode != 0, f"exit 0 on an invalid spec ({old!r} -> {new!r}):\n{text[:800]}"
        assert "Traceback" not in res.stderr and res.stderr.strip(), res.stderr[-2000:]
        runs += 1
    assert runs >= 10
