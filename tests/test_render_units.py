"""The rendered units and scripts, checked by the programs that will run them.

- `systemd-analyze verify` on each node's units together, in a throwaway root holding the host's
  own system units (targets) and a fake executable at every Exec*= path: a correct set gives exit 0
  and no output at all (a warning is a failure). A deliberately broken unit proves the check bites.
- `haproxy -c` on the load balancer's configuration.
- routes.sh run by `sh` with a fake `ip` that records what it is asked to do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hardway.plan import WORKSTATION, NodePlan
from hardway.render import node_plan
from test_render_helpers import IN_CI, VERSIONS, at_version, cluster, materials, need, text

SYSTEMD_HOW = "apt-get install systemd"
EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload")


def _host_units() -> Path:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "multi-user.target").is_file():
            return d
    message = f"no system units (multi-user.target) on this host; `{SYSTEMD_HOW}` provides them"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _programs(unit: str) -> set[str]:
    joined = unit.replace("\\\n", " ")
    found = set()
    for line in joined.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip() in EXEC_KEYS:
            found.add(value.strip().lstrip("-@:+!").split()[0])
    return found


def _root_for(tmp: Path, units: dict[str, str], fake_programs: bool = True) -> tuple[Path, list[str]]:
    root = tmp / "root"
    shutil.copytree(_host_units(), root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for name, body in units.items():
        (unit_dir / name).write_text(body)
        if fake_programs:
            for program in _programs(body):
                fake = root / program.lstrip("/")
                fake.parent.mkdir(parents=True, exist_ok=True)
                fake.write_text("#!/bin/sh\nexit 0\n")
                fake.chmod(0o755)
    return root, [str(unit_dir / name) for name in units]


def verify(tmp: Path, units: dict[str, str], fake_programs: bool = True) -> subprocess.CompletedProcess:
    tool = need("systemd-analyze", SYSTEMD_HOW)
    root, paths = _root_for(tmp, units, fake_programs)
    return subprocess.run([tool, "verify", f"--root={root}", "--man=no", "--generators=no", *paths],
                          capture_output=True, text=True, timeout=120)


def units_of(plan: NodePlan) -> dict[str, str]:
    return {f.path.rsplit("/", 1)[1]: f.data.decode() for f in plan.files if f.path.startswith("/etc/systemd/system/")}


def _nodes(example: str) -> list[str]:
    c = cluster(example)
    seen, names = set(), []
    for n in c.nodes:  # one node per combination of roles is enough
        if n.roles not in seen:
            seen.add(n.roles)
            names.append(n.name)
    return names


NODE_CASES = [pytest.param(e, n, id=f"{e}-{n}") for e in ("kthw", "ha", "six") for n in _nodes(e)]


@pytest.mark.parametrize("example,node", NODE_CASES)
def test_systemd_accepts_each_nodes_units_without_a_word(tmp_path, example, node):
    plan = node_plan(cluster(example), materials(example), node)
    units = units_of(plan)
    assert set(units) == set(plan.units)
    result = verify(tmp_path, units)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify on {node}:\n{output}"


@pytest.mark.parametrize("minor", VERSIONS)
def test_systemd_accepts_the_units_of_every_version(tmp_path, minor):
    c = at_version(cluster("kthw"), minor)
    units = {}
    for name in ("server", "node-0"):
        units.update(units_of(node_plan(c, materials("kthw"), name)))
    result = verify(tmp_path, units)
    assert (result.returncode, (result.stdout + result.stderr).strip()) == (0, "")


@pytest.mark.parametrize("breakage,expect", [
    pytest.param(lambda u: u.replace("Restart=on-failure", "Restart=sometimes"), "sometimes", id="bad-value"),
    pytest.param(lambda u: u.replace("[Service]\n", "[Service]\nExecStartt=/bin/true\n"), "ExecStartt", id="unknown-key"),
    pytest.param(lambda u: u.replace("Type=notify", "Type=notifyy"), "notifyy", id="bad-type"),
])
def test_a_broken_unit_fails_the_check(tmp_path, breakage, expect):
    units = units_of(node_plan(cluster("ha"), materials("ha"), "controller-0"))
    broken = breakage(units["etcd.service"])
    assert broken != units["etcd.service"]
    units["etcd.service"] = broken
    result = verify(tmp_path, units)
    output = (result.stdout + result.stderr).strip()
    assert output and expect in output  # the same rule as above: any output fails a unit


def test_a_missing_program_fails_the_check(tmp_path):
    units = units_of(node_plan(cluster("ha"), materials("ha"), "node-0"))
    result = verify(tmp_path, units, fake_programs=False)
    assert result.returncode != 0
    assert "/usr/local/bin/kubelet" in result.stdout + result.stderr


@pytest.mark.parametrize("example", ["ha", "large", "six"])
def test_haproxy_accepts_the_load_balancer_config(tmp_path, example):
    haproxy = need("haproxy", "apt-get install haproxy")
    c = cluster(example)
    [lb] = c.loadbalancers
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(node_plan(c, materials(example), lb.name).file("/etc/haproxy/haproxy.cfg").data)
    result = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr


def _run_routes(tmp_path: Path, example: str, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    sh = need("sh", "apt-get install dash")
    script = tmp_path / "routes.sh"
    script.write_bytes(node_plan(cluster(example), materials(example), WORKSTATION).file("/routes.sh").data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "ip.log"
    log.write_text("")
    fake = bin_dir / "ip"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    result = subprocess.run([sh, str(script), *args], capture_output=True, text=True, env=env, timeout=60)
    return result, log.read_text().splitlines()


@pytest.mark.parametrize("example,node", [("kthw", "node-0"), ("kthw", "server"), ("ha", "node-2"),
                                          ("ha", "controller-1"), ("six", "c2")])
def test_routes_script_adds_every_other_workers_range(tmp_path, example, node):
    c = cluster(example)
    result, calls = _run_routes(tmp_path, example, node)
    assert result.returncode == 0, result.stderr
    expected = [f"route replace {w.pod_cidr} via {w.address}" for w in c.workers if w.name != node]
    assert calls == expected
    assert calls == [f"route replace {r['cidr']} via {r['via']}" for r in node_plan(c, materials(example), node).notes["routes"]]


@pytest.mark.parametrize("args,code", [((), 2), (("nope",), 1), (("lb",), 1)])
def test_routes_script_refuses_a_wrong_node_and_touches_nothing(tmp_path, args, code):
    result, calls = _run_routes(tmp_path, "ha", *args)
    assert result.returncode == code and calls == []
    assert result.stderr.strip()


def test_pod_nat_rule_is_added_and_removed_symmetrically():
    plan = node_plan(cluster("ha"), materials("ha"), "node-1")
    unit = text(plan, "/etc/systemd/system/pod-nat.service")
    lines = dict(line.split("=", 1) for line in unit.splitlines() if line.startswith("Exec"))
    add = lines["ExecStart"].split()
    delete = lines["ExecStop"].split()
    assert add[add.index("-A")] and delete[delete.index("-D")]
    assert [a for a in add if a != "-A"] == [a for a in delete if a != "-D"]
    assert lines["ExecStartPre"].lstrip("-") == lines["ExecStop"]
    c = cluster("ha")
    assert add[add.index("-s") + 1] == str(c.node("node-1").pod_cidr)
    assert add[add.index("!") + 2] == str(c.pod_cidr)
    assert add[-2:] == ["-j", "MASQUERADE"]
    # and the bridge itself does not masquerade pod-to-pod traffic between nodes
    assert re.search(r'"ipMasq":\s*false', text(plan, "/etc/cni/net.d/10-bridge.conflist"))
