"""`hardway bundle` with nothing to do does nothing, and never skips what changed.

Each bundle's inputs are recorded beside the bundles (hardway/bundle/inputs.py). These tests check
both sides: an unchanged run renders and writes nothing (and the archives stay byte for byte, mtime
for mtime); every kind of changed input rebuilds the bundles that use it, and only those; an archive
changed or replaced on disk is rebuilt; a broken record only costs a rebuild. Plus: the bundles a
pool of processes builds are the bytes one process builds, and a killed run leaves no worker.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from hardway import spec
from hardway.bundle import check_bundles, inputs as inputs_mod, patch, plan_bundles, write_bundles
from hardway.bundle.archive import ArchiveStatus, read_archive
from hardway.pki import load_materials, reconcile, renew
from hardway.plan import WORKSTATION
from hardway.render import nodes as render_nodes

from helpers import REPO, session_processes

import hardway.bundle as bundle_mod

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TABLE = "/etc/kubernetes/cluster-nodes.tsv"


def load_text(text: str, where: Path) -> spec.Cluster:
    where.write_text(text)
    return spec.load(where)


def state(out: Path) -> dict:
    return json.loads((out / ".bundles.inputs").read_text())["bundles"]


def files(out: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every archive: (bytes, mtime, inode): a rewrite with the same bytes still shows."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted((out / "bundles").iterdir())}


@pytest.fixture
def built(tmp_path):
    """The ha example with its store and bundles in tmp_path/out."""
    cluster = load_text((REPO / "examples" / "ha.yaml").read_text(), tmp_path / "cluster.yaml")
    out = tmp_path / "out"
    materials = reconcile(cluster, out / "pki").materials
    run = write_bundles(cluster, materials, out)
    assert run.count(ArchiveStatus.CREATED) == len(cluster.nodes) + 1
    return cluster, out, materials


@pytest.fixture
def no_rendering(monkeypatch):
    """Rendering any node's plan fails the test."""
    def refuse(self, name):
        raise AssertionError(f"{name} was rendered")
    monkeypatch.setattr(render_nodes.Planner, "plan", refuse)


def rendered_nodes(monkeypatch) -> list[str]:
    """Record the names the planner renders (in this process: the pool is kept out)."""
    monkeypatch.setattr(bundle_mod, "PARALLEL_FROM", 10 ** 9)
    seen: list[str] = []
    original = render_nodes.Planner.plan

    def plan(self, name):
        seen.append(name)
        return original(self, name)
    monkeypatch.setattr(render_nodes.Planner, "plan", plan)
    return seen


# ---------------------------------------------------------------- nothing to do -------------------

def test_an_unchanged_run_renders_nothing_and_leaves_every_archive_as_it_was(built, no_rendering):
    cluster, out, materials = built
    before = files(out)
    run = write_bundles(cluster, materials, out)
    assert run.rendered == 0
    assert [s for _, s in run.results] == [ArchiveStatus.UNCHANGED] * (len(cluster.nodes) + 1)
    assert files(out) == before  # same bytes, same mtimes, same inodes: nothing rewritten


def test_plan_of_an_unchanged_spec_renders_nothing(built, no_rendering):
    cluster, out, _ = built
    changes = plan_bundles(cluster, out)
    assert {c.status for c in changes} == {"unchanged"} and len(changes) == len(cluster.nodes) + 1


def test_the_same_spec_gives_the_same_bytes_from_scratch(built, tmp_path):
    """Byte-identical output for an unchanged spec: a fresh bundles directory from the same store."""
    cluster, out, materials = built
    before = {name: data for name, (data, _, _) in files(out).items()}
    shutil.rmtree(out / "bundles")
    (out / ".bundles.inputs").unlink()
    write_bundles(cluster, materials, out)
    assert {name: data for name, (data, _, _) in files(out).items()} == before


# ---------------------------------------------------------------- changed inputs -----------------

def test_a_node_setting_rebuilds_that_node_only(built, tmp_path, monkeypatch):
    """A value only node-1 uses (its kubelet's resolvConf): node-1 and the workstation (whose inputs
    are the whole spec) are rendered; node-1's archive changes; nothing else is rendered."""
    cluster, out, materials = built
    text = (tmp_path / "cluster.yaml").read_text()
    changed = re.sub(r"(  - name: node-1\n    address: \S+\n)", r"\1    kubelet: {resolvConf: /run/systemd/resolve/resolv.conf}\n", text)
    assert changed != text
    cluster2 = load_text(changed, tmp_path / "cluster.yaml")
    before = files(out)
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster2, materials, out)
    assert sorted(seen) == sorted(["node-1", WORKSTATION])
    statuses = dict(run.results)
    assert statuses["node-1"] == ArchiveStatus.UPDATED
    after = files(out)
    assert {n for n in after if after[n] != before[n]} == {"node-1.tar.gz"}
    assert b"/run/systemd/resolve/resolv.conf" in read_archive(out / "bundles/node-1.tar.gz", "node-1")[
        "rootfs/etc/kubernetes/kubelet-config.yaml"].data
    assert check_bundles(cluster2, out, materials).ok


def test_a_new_worker_changes_the_node_table_everywhere_and_nothing_else(built, tmp_path):
    """Adding a worker: its bundle is created; every other bundle changes in its node table only
    (plus SHA256SUMS and install.sh's manifest, which list the table's digest); the workstation's
    hosts, routes and README name it."""
    cluster, out, _ = built
    text = (tmp_path / "cluster.yaml").read_text()
    bigger = load_text(text + "  - name: node-3\n    address: 10.240.0.23\n    roles: [worker]\n", tmp_path / "cluster.yaml")
    materials = reconcile(bigger, out / "pki").materials
    old = {n.name: read_archive(out / f"bundles/{n.name}.tar.gz", n.name) for n in cluster.nodes}
    run = write_bundles(bigger, materials, out)
    statuses = dict(run.results)
    assert statuses["node-3"] == ArchiveStatus.CREATED
    for n in cluster.nodes:
        assert statuses[n.name] == ArchiveStatus.UPDATED
        new = read_archive(out / f"bundles/{n.name}.tar.gz", n.name)
        differ = {name for name in set(old[n.name]) | set(new) if old[n.name].get(name) != new.get(name)}
        assert differ == {"rootfs" + TABLE, "SHA256SUMS", "install.sh"}, (n.name, differ)
        assert b"node-3" in new["rootfs" + TABLE].data
    changes = {c.node: c for c in plan_bundles(bigger, out)}
    assert {c.status for c in changes.values()} == {"unchanged"}
    assert check_bundles(bigger, out, materials).ok


def test_a_renewed_certificate_rebuilds_the_bundles_that_carry_it(built, monkeypatch):
    cluster, out, _ = built
    renew(cluster, out / "pki", entry="kubelet-serving", node="node-2")
    materials = load_materials(cluster, out / "pki")
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster, materials, out)
    assert seen == ["node-2"]
    assert dict(run.results)["node-2"] == ArchiveStatus.UPDATED
    assert check_bundles(cluster, out, materials).ok


def test_a_cluster_wide_value_rebuilds_every_bundle(built, tmp_path, monkeypatch):
    cluster, out, _ = built
    text = (tmp_path / "cluster.yaml").read_text()
    assert "provider: secretbox" in text
    changed = load_text(text.replace("provider: secretbox", "provider: aesgcm"), tmp_path / "cluster.yaml")
    materials = reconcile(changed, out / "pki").materials
    seen = rendered_nodes(monkeypatch)
    write_bundles(changed, materials, out)
    assert sorted(seen) == sorted([n.name for n in cluster.nodes] + [WORKSTATION])


def test_a_new_hardway_or_template_rebuilds_every_bundle(built, monkeypatch):
    """The source digest covers hardway's code and data: a different one renders everything again
    (here the output is the same, so no archive is rewritten)."""
    cluster, out, materials = built
    before = files(out)
    monkeypatch.setattr(inputs_mod, "source_digest", lambda: "another hardway")
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster, materials, out)
    assert len(seen) == len(cluster.nodes) + 1
    assert {s for _, s in run.results} == {ArchiveStatus.UNCHANGED} and files(out) == before
    assert {r["inputs"]["source"] for r in state(out).values()} == {"another hardway"}


def test_the_source_digest_covers_templates_the_version_table_and_the_catalog(tmp_path, monkeypatch):
    """Each data file and the code are in the digest: changing any one of them changes it."""
    for name in ("units", "pki"):
        shutil.copytree(inputs_mod.data_dir(name), tmp_path / name)
    monkeypatch.setattr(inputs_mod, "data_dir", lambda name: tmp_path / name)
    digest = inputs_mod.source_digest.__wrapped__
    base = digest()
    for rel in ("units/versions.yaml", "units/bundle/INSTALL.md.j2", "units/network/cluster-nodes.tsv.j2", "pki/catalog.yaml"):
        path = tmp_path / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert digest() != base, rel
        path.write_bytes(original)
    assert digest() == base


# ---------------------------------------------------------------- what is on disk ----------------

def test_a_changed_archive_is_rebuilt(built, monkeypatch):
    cluster, out, materials = built
    target = out / "bundles" / "node-0.tar.gz"
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit: same size, other digest
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster, materials, out)
    assert seen == ["node-0"] and dict(run.results)["node-0"] == ArchiveStatus.UPDATED
    assert target.read_bytes() == good


def test_a_link_in_place_of_an_archive_is_replaced_not_followed(built, tmp_path, monkeypatch):
    cluster, out, materials = built
    target = out / "bundles" / "node-0.tar.gz"
    elsewhere = tmp_path / "elsewhere.tar.gz"
    elsewhere.write_bytes(target.read_bytes())  # the recorded bytes, behind a link
    good = target.read_bytes()
    target.unlink()
    target.symlink_to(elsewhere)
    seen = rendered_nodes(monkeypatch)
    write_bundles(cluster, materials, out)
    assert seen == ["node-0"]
    assert not target.is_symlink() and target.read_bytes() == good and elsewhere.read_bytes() == good


def test_a_missing_archive_is_rebuilt(built, monkeypatch):
    cluster, out, materials = built
    (out / "bundles" / "lb.tar.gz").unlink()
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster, materials, out)
    assert seen == ["lb"] and dict(run.results)["lb"] == ArchiveStatus.CREATED


@pytest.mark.parametrize("damage", ["garbage", "link", "other format", "wrong inputs"])
def test_a_broken_record_costs_a_rebuild_never_a_wrong_skip(built, tmp_path, damage, monkeypatch):
    cluster, out, materials = built
    record = out / ".bundles.inputs"
    before = files(out)
    if damage == "garbage":
        record.write_bytes(b"\x00{not json")
    elif damage == "link":
        other = tmp_path / "other"
        other.write_bytes(record.read_bytes())
        record.unlink()
        record.symlink_to(other)
    elif damage == "other format":
        record.write_text(json.dumps({"format": 99, "bundles": state(out)}))
    else:
        data = json.loads(record.read_text())
        for rec in data["bundles"].values():
            rec["inputs"]["pki"] = "0" * 32
        record.write_text(json.dumps(data))
    seen = rendered_nodes(monkeypatch)
    run = write_bundles(cluster, materials, out)
    assert len(seen) == len(cluster.nodes) + 1
    assert {s for _, s in run.results} == {ArchiveStatus.UNCHANGED} and files(out) == before
    assert not record.is_symlink() and state(out)["lb"]["inputs"]["pki"] != "0" * 32


def test_check_verifies_an_archive_the_record_vouches_for(built):
    """`check` never trusts the record: a bundle changed on disk, with the record made to match it, is
    still reported."""
    import hashlib
    import tarfile
    cluster, out, materials = built
    target = out / "bundles" / "node-1.tar.gz"
    with tarfile.open(target) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(target, "w:gz") as tar:
        for m, data in members:
            if m.name.endswith("kubelet-config.yaml"):
                data = data.replace(b"cgroupDriver", b"cgroupdriver")
                m.size = len(data)
            tar.addfile(m, None if data is None else io.BytesIO(data))
    record = out / ".bundles.inputs"
    data = json.loads(record.read_text())
    raw = target.read_bytes()
    data["bundles"]["node-1"].update(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    record.write_text(json.dumps(data))
    report = check_bundles(cluster, out, materials)
    assert not report.ok and any("kubelet-config.yaml" in p for p in report.all_problems())


# ---------------------------------------------------------------- processes ----------------------

def test_a_pool_builds_the_bytes_one_process_builds(built, tmp_path, monkeypatch):
    cluster, out, materials = built
    serial = {name: data for name, (data, _, _) in files(out).items()}  # built in-process (8 < PARALLEL_FROM)
    monkeypatch.setattr(bundle_mod, "PARALLEL_FROM", 1)
    monkeypatch.setattr(bundle_mod, "_workers", lambda count: 2)
    other = tmp_path / "pooled"
    shutil.copytree(out / "pki", other / "pki")
    write_bundles(cluster, materials, other)
    assert {name: data for name, (data, _, _) in files(other).items()} == serial


@pytest.mark.slow
def test_a_killed_bundle_run_leaves_no_worker_and_the_next_run_is_whole(tmp_path):
    """kill -9 while the pool builds: no worker survives (they hold the lock), no temp file stays after
    the next run, and that run's bundles check out (every archive is old or new, never half)."""
    if (len(os.sched_getaffinity(0))) < 2:
        pytest.skip("the bundle pool needs 2 cores")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_large import large_spec
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(large_spec(300))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hardway", "bundle", "--spec", str(spec_file), "--out", str(out)]
    assert subprocess.run([sys.executable, "-m", "hardway", "pki", "--spec", str(spec_file), "--out", str(out)],
                          env=ENV, capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(session_processes(proc.pid)) < 3 and time.monotonic() < deadline:  # the pool is up
        time.sleep(0.01)
    time.sleep(0.3)  # and building
    assert len(session_processes(proc.pid)) >= 3, "no bundle pool started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    start = time.monotonic()
    while session_processes(proc.pid) and time.monotonic() - start < 15:
        time.sleep(0.1)
    left = session_processes(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers of the killed run are still alive"
    proc.stderr.read()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not list((out / "bundles").glob(".hardway-*"))
    r = subprocess.run([sys.executable, "-m", "hardway", "check", "--spec", str(spec_file), "--out", str(out)],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert "0 created, 0 updated, 305 unchanged" in r.stdout, r.stdout


def test_bundles_patched_for_a_new_node_table_are_the_bytes_of_a_full_build(built, tmp_path, monkeypatch):
    """Adding a worker patches the other bundles' archives (their node table and its digests) without
    rendering them; the result is byte for byte a full build of the bigger cluster."""
    cluster, out, _ = built
    text = (tmp_path / "cluster.yaml").read_text()
    bigger = load_text(text + "  - name: node-3\n    address: 10.240.0.23\n    roles: [worker]\n", tmp_path / "cluster.yaml")
    materials = reconcile(bigger, out / "pki").materials
    seen = rendered_nodes(monkeypatch)
    write_bundles(bigger, materials, out)
    assert sorted(seen) == sorted(["node-3", WORKSTATION])  # the others were patched, not rendered
    fresh = tmp_path / "fresh"
    shutil.copytree(out / "pki", fresh / "pki")
    write_bundles(bigger, materials, fresh)
    assert {n: d for n, (d, _, _) in files(out).items()} == {n: d for n, (d, _, _) in files(fresh).items()}


def _mutations(text: str) -> dict[str, str]:
    node1 = re.compile(r"(  - name: node-1\n    address: )(\S+)(\n)")
    ctrl1 = re.compile(r"(  - name: controller-1\n    address: )(\S+)(\n)")
    assert node1.search(text) and ctrl1.search(text)
    return {
        "a worker's address": node1.sub(r"\g<1>10.240.0.41\3", text),
        "a worker's fqdn": node1.sub(r"\g<1>\2\3    fqdn: node-1.example.internal\n", text),
        "a worker's kubelet": node1.sub(r"\g<1>\2\3    kubelet: {resolvConf: /run/systemd/resolve/resolv.conf}\n", text),
        "a controller's address": ctrl1.sub(r"\g<1>10.240.0.42\3", text),
        "a new worker": text + "  - name: node-3\n    address: 10.240.0.23\n    roles: [worker]\n",
        "a worker less": re.sub(r"  - name: node-2\n(    .*\n)*", "", text),
        "the cluster domain": text.replace("  serviceCIDR:", "  clusterDomain: example.local\n  serviceCIDR:", 1),
    }


@pytest.mark.parametrize("what", ["a worker's address", "a worker's fqdn", "a worker's kubelet", "a controller's address",
                                  "a new worker", "a worker less", "the cluster domain"])
def test_equal_input_digests_mean_equal_bundles(what, tmp_path):
    """The skip's soundness, checked from the output side: for each kind of spec change, every bundle
    whose four digests did not change renders to the same bytes (same materials on both sides, so
    only the spec differs). A template that starts reading another worker's values outside the node
    table fails here."""
    from hardway.bundle import layout
    from hardway.bundle.archive import tar_bytes
    from hardway.bundle.inputs import Inputs
    from hardway.pki import generate_materials
    text = (REPO / "examples" / "ha.yaml").read_text()
    before = load_text(text, tmp_path / "a.yaml")
    after = load_text(_mutations(text)[what], tmp_path / "b.yaml")
    assert after != before
    materials = generate_materials(after)  # holds node-3 for "a new worker"; extra entries are never read
    old, new = Inputs(before, materials), Inputs(after, materials)
    planner_old, planner_new = render_nodes.Planner(before, materials), render_nodes.Planner(after, materials)
    names = {n.name for n in before.nodes} & {n.name for n in after.nodes} | {WORKSTATION}
    same = [n for n in sorted(names) if old.of(n) == new.of(n)]
    for name in same:
        a = tar_bytes(layout.members(before, planner_old.plan(name)))
        b = tar_bytes(layout.members(after, planner_new.plan(name)))
        assert a == b, f"{name}: same inputs, other bytes after {what}"
    # a bundle whose only changed input is the node table is patched, not rendered: nothing but the
    # shared files and the two lists of their digests may differ
    for name in sorted(names - set(same)):
        if [c for c in old.of(name) if old.of(name)[c] != new.of(name)[c]] != ["table"]:
            continue
        a = {m.name: m for m in layout.members(before, planner_old.plan(name))}
        b = {m.name: m for m in layout.members(after, planner_new.plan(name))}
        differ = {n.split("/", 1)[1] for n in set(a) | set(b) if a.get(n) != b.get(n)}
        shared = {layout.member_name(name, f.path) for f in planner_new.shared_files(name)}
        assert differ <= shared | {layout.SUMS, layout.INSTALL_SH}, f"{name}: {sorted(differ)} differ after {what}"
    assert names - set(same), f"{what} changed no bundle's inputs"


def _gzip_members(data: bytes) -> list[tuple[bytes, bytes]]:
    """(compressed, decompressed) of each gzip member of an archive, in order."""
    out = []
    while data:
        d = zlib.decompressobj(31)
        raw = d.decompress(data)
        assert d.eof
        used = len(data) - len(d.unused_data)
        out.append((data[:used], raw))
        data = data[used:]
    return out


def test_archive_members_carry_each_shared_header_before_its_data(built):
    """Bundle bytes are in every node's archive: a shared file's header (it names the node) rides in
    the member before its data, whose compressed bytes are the same in every bundle; the end blocks
    ride with the last data. The layout patch.py relies on, checked on the archives written."""
    cluster, out, _ = built
    shared = [TABLE, "/usr/local/sbin/hardway-nodes.sh"]
    data_members = []
    for node in cluster.nodes:
        members = _gzip_members((out / "bundles" / f"{node.name}.tar.gz").read_bytes())
        assert len(members) == 1 + 2 * len(shared), node.name  # own; (header, data) per shared file
        second = members[1][1]
        names = [m.name for m in patch.parse_tar(second, limit=2)]
        assert names == [f"{node.name}/SHA256SUMS", f"{node.name}/install.sh"]
        # what follows them in the second member is exactly one header: the node table's, no data
        size = sum(512 + -(-len(m.data) // 512) * 512 for m in patch.parse_tar(second, limit=2))
        head = second[size:]
        assert len(head) == 512 and head[257:263] == b"ustar\0"
        assert head[:100].rstrip(b"\0").decode() == f"{node.name}/rootfs{TABLE}"
        assert members[2][1].startswith(b"# hardway node table")
        assert members[-1][1].endswith(bytes(1024))
        data_members.append((members[2][0], members[-1][0]))
    assert len(set(data_members)) == 1  # compressed once, the same bytes in every bundle
