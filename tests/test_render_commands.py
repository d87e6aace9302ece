"""`hardway kubeconfigs` and `hardway units`: what they write, with which modes, and that a re-run
or a failure leaves what is there alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hardway.errors import HardwayError
from hardway.fsutil import RECORD
from hardway.pki import load_materials
from hardway.render import write as render_write
from render_helpers import V6_SPEC, cluster, kubeconfig_parts, materials

HA = Path(__file__).resolve().parent.parent / "examples" / "ha.yaml"


def hardway(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardway", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), mode(p), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """`kubeconfigs` then `units` on the ha example, into a fresh out dir."""
    work = tmp_path_factory.mktemp("cli")
    spec = work / "cluster.yaml"
    spec.write_text(HA.read_text())
    first = hardway("kubeconfigs", "--spec", str(spec), "--out", "out", cwd=work)
    assert first.returncode == 0, first.stderr
    units = hardway("units", "--spec", str(spec), "--out", "out", cwd=work)
    assert units.returncode == 0, units.stderr
    return work, first, units


def test_kubeconfigs_are_written_private_from_the_reconciled_store(rendered):
    work, first, _ = rendered
    c = cluster("ha")
    out = work / "out" / "kubeconfigs"
    assert mode(out) == 0o700
    expected = {"admin", "super-admin", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                *(f"kubelet-{w.name}" for w in c.workers)}
    assert {p.name for p in out.iterdir()} == {f"{e}.kubeconfig" for e in expected}
    store = load_materials(c, work / "out" / "pki")
    for p in out.iterdir():
        assert mode(p) == 0o600, p
        assert kubeconfig_parts(p.read_bytes())["ca"] == store.cert("ca")
    assert f"kubeconfigs: {len(expected)} written, 0 unchanged, 0 removed" in first.stdout


def test_a_rerun_changes_nothing(rendered):
    work, _, _ = rendered
    before = snapshot(work / "out")
    spec = str(work / "cluster.yaml")
    again = hardway("kubeconfigs", "--spec", spec, "--out", "out", cwd=work)
    assert again.returncode == 0 and " 0 written," in again.stdout
    units = hardway("units", "--spec", spec, "--out", "out", cwd=work)
    assert units.returncode == 0
    after = snapshot(work / "out")
    kube = {k: v for k, v in after.items() if k.startswith("kubeconfigs/")}
    assert kube == {k: v for k, v in before.items() if k.startswith("kubeconfigs/")}  # not even touched
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}  # same bytes and modes


def test_units_writes_each_node_tree_with_its_modes(rendered):
    work, _, units = rendered
    nodes = work / "out" / "nodes"
    c = cluster("ha")
    assert mode(nodes) == 0o700
    assert {p.name for p in nodes.iterdir()} == {n.name for n in c.nodes} | {"workstation", RECORD}
    from hardway.render import node_plan
    store = load_materials(c, work / "out" / "pki")
    for name in ("controller-1", "node-2", "lb", "workstation"):
        plan = node_plan(c, store, name)
        written = {str(p.relative_to(nodes / name)) for p in (nodes / name).rglob("*") if p.is_file()}
        assert written == {f.path.lstrip("/") for f in plan.files}
        for f in plan.files:
            target = nodes / name / f.path.lstrip("/")
            assert target.read_bytes() == f.data and mode(target) == f.mode, target
        for d in plan.directories:
            assert mode(nodes / name / d.path.lstrip("/")) == d.mode
    assert "units: 8 file trees" in units.stdout


def test_a_removed_worker_loses_its_kubeconfig_and_tree(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(V6_SPEC)
    assert hardway("kubeconfigs", "--spec", str(spec), "--out", "out", cwd=tmp_path).returncode == 0
    assert hardway("units", "--spec", str(spec), "--out", "out", cwd=tmp_path).returncode == 0
    assert (tmp_path / "out/kubeconfigs/kubelet-w0.kubeconfig").exists()
    spec.write_text(V6_SPEC.replace('  - {name: w0, address: "fd00::20", roles: [worker], fqdn: w0.six.example}\n', ""))
    result = hardway("kubeconfigs", "--spec", str(spec), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0 and "removed" in result.stdout
    assert not (tmp_path / "out/kubeconfigs/kubelet-w0.kubeconfig").exists()
    assert hardway("units", "--spec", str(spec), "--out", "out", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "out/nodes/w0").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and not p.name.endswith(".written")], \
        "temporary trees left behind"


def test_a_bad_spec_is_a_message_and_changes_nothing(rendered, tmp_path):
    work, _, _ = rendered
    before = snapshot(work / "out")
    bad = tmp_path / "bad.yaml"
    bad.write_text(HA.read_text().replace("serviceCIDR: 10.32.0.0/24", "serviceCIDR: 10.32.0.0/33"))
    for task in ("kubeconfigs", "units"):
        result = hardway(task, "--spec", str(bad), "--out", str(work / "out"), cwd=tmp_path)
        assert result.returncode == 2
        assert "network.serviceCIDR" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(work / "out") == before


def test_a_failure_while_rendering_keeps_the_previous_trees(tmp_path, monkeypatch):
    c, m = cluster("ha"), materials("ha")
    nodes = tmp_path / "nodes"
    render_write.write_node_trees(c, m, nodes)
    before = snapshot(nodes)
    real = render_write.iter_node_plans

    def failing(cluster_, materials_):
        for i, plan in enumerate(real(cluster_, materials_)):
            if i == 3:
                raise HardwayError("template units/x.j2: boom")
            yield plan

    monkeypatch.setattr(render_write, "iter_node_plans", failing)
    with pytest.raises(HardwayError, match="boom"):
        render_write.write_node_trees(c, m, nodes)
    assert snapshot(nodes) == before
    assert [p.name for p in tmp_path.iterdir()] == ["nodes"], "a half-written tree was left behind"


def test_a_failure_while_rendering_kubeconfigs_writes_none(tmp_path, monkeypatch):
    c, m = cluster("ha"), materials("ha")
    out = tmp_path / "kubeconfigs"
    render_write.write_kubeconfigs(c, m, out)
    before = snapshot(out)
    real = render_write.iter_kubeconfigs
    other = materials("six")  # different CA: every file would change

    def failing(cluster_, materials_):
        for i, item in enumerate(real(cluster_, other)):
            if i == 4:
                raise HardwayError("template units/kubeconfig.yaml.j2: boom")
            yield item

    monkeypatch.setattr(render_write, "iter_kubeconfigs", failing)
    with pytest.raises(HardwayError, match="boom"):
        render_write.write_kubeconfigs(c, m, out)
    assert snapshot(out) == before
