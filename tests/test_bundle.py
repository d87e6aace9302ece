"""The bundle stage: archive layout and reproducibility, least privilege judged by content,
references, `plan` and `check`. The ha example (ECDSA, fast) unless the point needs kthw."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hardway import spec
from hardway.bundle import check_bundles, layout, plan_bundles, write_bundles
from hardway.fsutil import extract_bundle
from hardway.bundle.archive import MTIME, read_archive, write_archive
from hardway.bundle.privilege import Checker, private_keys
from hardway.bundle.references import unresolved
from hardway.errors import HardwayError
from hardway.pki import load_materials, reconcile
from hardway.plan import WORKSTATION, NodePlan, PlannedFile
from hardway.render import iter_node_plans

from helpers import REPO  # noqa: E402
PKI = "/etc/kubernetes/pki"


def load(example: str) -> spec.Cluster:
    return spec.load(REPO / "examples" / f"{example}.yaml")


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    """The ha example with a reconciled store and its bundles in <out>; plans by node."""
    cluster = load("ha")
    out = tmp_path_factory.mktemp("ha")
    materials = reconcile(cluster, out / "pki").materials
    write_bundles(cluster, materials, out)
    plans = {p.node: p for p in iter_node_plans(cluster, materials)}
    return cluster, out, materials, plans


@pytest.fixture
def ha_copy(ha, tmp_path):
    """A private copy of the ha output (store and bundles) a test may change."""
    cluster, out, materials, plans = ha
    shutil.copytree(out, tmp_path / "out")
    return cluster, tmp_path / "out", materials, plans


def with_files(plan: NodePlan, *extra: PlannedFile, drop: tuple[str, ...] = (), replace: dict | None = None) -> NodePlan:
    files = [f for f in plan.files if f.path not in drop]
    if replace:
        files = [dataclasses.replace(f, **replace[f.path]) if f.path in replace else f for f in files]
    return dataclasses.replace(plan, files=tuple(sorted(files + list(extra), key=lambda f: f.path)))


# ---------------------------------------------------------------- layout ------------------------

def test_bundle_layout_of_a_node(ha):
    cluster, _, _, plans = ha
    plan = plans["controller-0"]
    members = layout.members(cluster, plan)
    names = [m.name for m in members]
    assert names[0] == "controller-0" and all(n.startswith("controller-0/") for n in names[1:])
    files = {m.name: m for m in members if not m.is_dir}
    rootfs = {n[len("controller-0/rootfs"):] for n in files if n.startswith("controller-0/rootfs/")}
    assert rootfs == {f.path for f in plan.files}
    assert set(files) - {f"controller-0/rootfs{p}" for p in rootfs} == \
        {"controller-0/install.sh", "controller-0/INSTALL.md", "controller-0/SHA256SUMS", "controller-0/fetch-binaries.sh"}
    assert files["controller-0/install.sh"].mode == 0o755 and files["controller-0/fetch-binaries.sh"].mode == 0o755
    # SHA256SUMS: one line per planned file, in `sha256sum -c` format, hashes of the planned bytes
    lines = files["controller-0/SHA256SUMS"].data.decode().splitlines()
    assert len(lines) == len(plan.files)
    for line in lines:
        digest, name = re.fullmatch(r"([0-9a-f]{64})  (rootfs/\S+)", line).groups()
        assert hashlib.sha256(plan.file(name[len("rootfs"):]).data).hexdigest() == digest


def test_install_sh_manifest_comes_from_the_plan(ha):
    cluster, _, _, plans = ha
    plan = plans["node-0"]
    script = next(m for m in layout.members(cluster, plan) if m.name.endswith("install.sh")).data.decode()
    entries = layout.parse_manifest(script)
    assert {(e.path, e.mode) for e in entries if e.kind == "f"} == {(f.path, f.mode) for f in plan.files}
    assert {(e.path, e.mode) for e in entries if e.kind == "d"} == {(d.path, d.mode) for d in plan.directories}
    assert {e.path for e in entries if e.kind == "b"} == {b["path"] for b in plan.notes.binaries}
    assert f"UNITS='{' '.join(plan.units)}'" in script


def test_install_md_is_written_for_its_node(ha):
    cluster, _, _, plans = ha
    texts = {n: next(m for m in layout.members(cluster, plans[n]) if m.name.endswith("INSTALL.md")).data.decode()
             for n in ("controller-0", "node-1", "lb")}
    ctrl, worker, lb = texts["controller-0"], texts["node-1"], texts["lb"]
    for f in plans["controller-0"].files:
        assert f"`{f.path}` | {f.mode:04o} |" in ctrl
    assert "--cacert /etc/kubernetes/pki/etcd-ca.crt" in ctrl and "--endpoints https://127.0.0.1:2379" in ctrl
    assert "--cert /etc/kubernetes/pki/etcd-healthcheck-client.crt" in ctrl
    for m in cluster.etcd_members:
        assert m.peer_url in ctrl
    assert "etcdctl" not in worker and "etcdctl" not in lb
    assert "swapoff -a" in worker and "swapoff" not in ctrl
    assert "modprobe -a" in worker and "br_netfilter" in worker
    assert "wait --for=condition=Ready node/node-1" in worker
    for b in plans["controller-0"].notes.binaries:
        assert f"`{b['name']}` | {b['version']} | `{b['path']}`" in ctrl
    # routes and hosts: one command each over the node table, which INSTALL.md points at instead of
    # listing every other node (it would grow with the cluster)
    table = "/etc/kubernetes/cluster-nodes.tsv"
    assert "/usr/local/sbin/hardway-nodes.sh routes add node-1" in worker
    assert "/usr/local/sbin/hardway-nodes.sh routes add controller-0" in ctrl
    assert "routes add" not in lb and "/usr/local/sbin/hardway-nodes.sh hosts" in lb
    for node, text in texts.items():
        assert table in text
        for w in cluster.workers:
            if w.name != node:
                assert str(w.pod_cidr) not in text, (node, w.name)
    assert "haproxy" in lb


@pytest.mark.parametrize("example", ["ha", "kthw"])
def test_arch_is_set_before_the_urls_use_it(example, tmp_path):
    """Every INSTALL.md and README.md that downloads from a `${ARCH}` URL says how to set ARCH first."""
    cluster = load(example)
    materials = reconcile(cluster, tmp_path / "pki").materials
    using = []
    for plan in iter_node_plans(cluster, materials):
        for m in layout.members(cluster, plan):
            if not m.name.endswith((layout.INSTALL_MD, layout.README)):
                continue
            text = m.data.decode()
            if "${ARCH}" not in text:
                continue
            define = text.find("ARCH=$(dpkg --print-architecture)")
            assert 0 <= define < text.index("${ARCH}"), m.name
            assert "ARCH=$(uname -m | sed -e s/x86_64/amd64/ -e s/aarch64/arm64/)" in text, m.name
            using.append(m.name.split("/")[0])
    assert {"workstation", "node-0"} <= set(using)  # not vacuous


def test_the_load_balancer_checks_haproxy_from_its_package(ha):
    cluster, _, materials, plans = ha
    lb = plans["lb"]
    assert [(b["name"], b["path"], b.get("package")) for b in lb.notes.binaries] == \
        [("haproxy", "/usr/sbin/haproxy", "haproxy")]
    assert "haproxy" in lb.notes.packages
    members = {m.name: m.data.decode() for m in layout.members(cluster, lb) if not m.is_dir}
    assert "b 755 - /usr/sbin/haproxy" in members["lb/install.sh"]
    text = members["lb/INSTALL.md"]
    assert "`/usr/sbin/haproxy` comes from the Debian package `haproxy`" in text
    assert "Binaries to download" not in text and "${ARCH}" not in text and "dl.k8s.io" not in text


def test_the_bundles_lock_is_beside_the_bundles_not_among_them(ha_copy):
    import fcntl
    cluster, out, materials, _ = ha_copy
    write_bundles(cluster, materials, out)
    assert not (out / "bundles" / ".lock").exists()
    assert [p.name for p in (out / "bundles").iterdir() if not p.name.endswith(".tar.gz")] == []
    with open(out / ".bundles.lock", "a") as held:  # another run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(HardwayError, match="another hardway run is writing"):
            write_bundles(cluster, materials, out)
    write_bundles(cluster, materials, out)  # released: fine again


def test_a_plan_with_an_unsafe_path_is_refused(ha):
    cluster, _, _, plans = ha
    bad = with_files(plans["lb"], PlannedFile("/etc/haproxy/../shadow", 0o644, b"x", "bad"))
    with pytest.raises(HardwayError, match=r"/etc/haproxy/\.\./shadow"):
        layout.members(cluster, bad)
    spaced = with_files(plans["lb"], PlannedFile("/etc/a b", 0o644, b"x", "bad"))
    with pytest.raises(HardwayError, match="not an absolute path of plain names"):
        layout.members(cluster, spaced)


# ---------------------------------------------------------------- reproducible ------------------

def test_archives_are_byte_identical_across_out_dirs(ha, tmp_path):
    cluster, out, _, _ = ha
    for name in ("a", "b"):
        shutil.copytree(out / "pki", tmp_path / name / "pki")
        materials = load_materials(cluster, tmp_path / name / "pki")
        write_bundles(cluster, materials, tmp_path / name)
    a, b = tmp_path / "a" / "bundles", tmp_path / "b" / "bundles"
    names = sorted(p.name for p in a.glob("*.tar.gz"))
    assert names == sorted(p.name for p in b.glob("*.tar.gz")) and len(names) == len(cluster.nodes) + 1
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() == (out / "bundles" / name).read_bytes(), name


def test_gzip_header_has_no_time_or_name(ha):
    _, out, _, _ = ha
    head = (out / "bundles" / "lb.tar.gz").read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] & 0x08 == 0, "FNAME set"
    assert head[4:8] == b"\0\0\0\0", "MTIME set"


def test_an_unchanged_run_rewrites_nothing(ha_copy):
    cluster, out, materials, _ = ha_copy
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (out / "bundles").glob("*.tar.gz")}
    run = write_bundles(cluster, materials, out)
    assert run.count("unchanged") == len(cluster.nodes) + 1 and not run.removed
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (out / "bundles").glob("*.tar.gz")}
    assert after == before
    assert not [p for p in (out / "bundles").iterdir() if p.name.endswith(".tmp")]


def test_write_archive_is_atomic_and_keeps_an_unchanged_file(tmp_path):
    members = [layout.Member("n", 0o700), layout.Member("n/a", 0o644, b"one\n")]
    target = tmp_path / "n.tar.gz"
    assert write_archive(target, members) == "created"
    assert target.stat().st_mode & 0o777 == 0o600
    stamp = target.stat().st_mtime_ns
    assert write_archive(target, members) == "unchanged" and target.stat().st_mtime_ns == stamp
    changed = [members[0], layout.Member("n/a", 0o644, b"two\n")]

    class Boom(Exception):
        pass

    def exploding():
        yield changed[0]
        raise Boom

    with pytest.raises(Boom):  # a failure mid-write leaves the old archive and no temp file
        write_archive(target, exploding())
    assert read_archive(target, "n")["a"].data == b"one\n"
    assert [p.name for p in tmp_path.iterdir()] == ["n.tar.gz"]
    assert write_archive(target, changed) == "updated"
    assert read_archive(target, "n")["a"].data == b"two\n"
    with tarfile.open(target) as tar:
        assert [(m.name, m.mtime, m.uid, m.uname) for m in tar] == [("n", MTIME, 0, "root"), ("n/a", MTIME, 0, "root")]


# ---------------------------------------------------------------- least privilege ---------------

def test_every_bundle_of_the_examples_is_least_privilege(ha, tmp_path):
    """Read back from the archives on disk (check_bundles), for ha here and kthw (RSA) too."""
    cluster, out, materials, _ = ha
    report = check_bundles(cluster, out, materials)
    assert report.ok, report.all_problems()
    assert len(report.rows) == len(cluster.nodes) + 1
    kthw = load("kthw")
    materials = reconcile(kthw, tmp_path / "pki").materials
    write_bundles(kthw, materials, tmp_path)
    report = check_bundles(kthw, tmp_path, materials)
    assert report.ok, report.all_problems()


def test_what_each_role_holds(ha):
    """The secrets found by content match the delivery rules, node by node."""
    cluster, out, materials, _ = ha
    checker = Checker(cluster, materials)
    for node in [n.name for n in cluster.nodes] + [WORKSTATION]:
        members = read_archive(out / "bundles" / f"{node}.tar.gz", node)
        held = set()
        for name, m in members.items():
            for k in private_keys(m.data):
                held.add(checker.identify(k.fingerprint))
        roles = checker.roles(node)
        if "loadbalancer" in roles:
            assert held == set()
        elif "worker" in roles:
            assert held == {("kubelet-serving", node), ("kubelet-client", node), ("kube-proxy", None)}
        elif "controller" in roles:
            assert held == {("ca", None), ("kube-apiserver", node), ("etcd-server", node), ("etcd-peer", node),
                            ("apiserver-kubelet-client", None), ("apiserver-etcd-client", None),
                            ("front-proxy-client", None), ("etcd-healthcheck-client", None),
                            ("kube-controller-manager", None), ("kube-scheduler", None), ("service-account", None)}
        else:
            assert held == {("admin", None), ("super-admin", None)}
        assert not {("etcd-ca", None), ("front-proxy-ca", None)} & held


def _kubeconfig_with_key(kubeconfig: bytes, key_pem: bytes) -> bytes:
    doc = yaml.safe_load(kubeconfig)
    doc["users"][0]["user"]["client-key-data"] = base64.b64encode(key_pem).decode()
    return yaml.safe_dump(doc).encode()


def planted(ha):
    """(node, plan with a planted mistake, words the finding must contain)."""
    cluster, _, m, plans = ha
    w, c, lb, ws = plans["node-0"], plans["controller-0"], plans["lb"], plans[WORKSTATION]
    kubelet = w.file("/etc/kubernetes/kubelet.kubeconfig")
    return [
        ("ca key under an innocent name", w,
         with_files(w, PlannedFile("/etc/kubernetes/pki/extra.pem", 0o600, m.key("ca"), "x")), "private key of ca,"),
        ("another node's kubelet identity in the kubelet kubeconfig", w,
         with_files(w, replace={kubelet.path: {"data": _kubeconfig_with_key(kubelet.data, m.key("kubelet-client", "node-1"))}}),
         "client-key-data: the private key of kubelet-client of node-1"),
        ("a controller's serving key renamed as the kubelet's", w,
         with_files(w, replace={f"{PKI}/kubelet-serving.key": {"data": m.key("kube-apiserver", "controller-0")}}),
         "kube-apiserver of controller-0"),
        ("kube-proxy credentials on the load balancer", lb,
         with_files(lb, w.file("/etc/kubernetes/kube-proxy.kubeconfig")), "kube-proxy"),
        ("etcd-ca key on a controller", c,
         with_files(c, PlannedFile(f"{PKI}/etcd-ca.key", 0o600, m.key("etcd-ca"), "x")), "etcd-ca"),
        ("front-proxy-ca key on the workstation", ws,
         with_files(ws, PlannedFile("/front-proxy-ca.key", 0o600, m.key("front-proxy-ca"), "x")), "front-proxy-ca"),
        ("encryption config on a worker", w,
         with_files(w, c.file("/etc/kubernetes/encryption-config.yaml")), "encryption-at-rest key"),
        ("service-account key on the workstation", ws,
         with_files(ws, PlannedFile("/sa.key", 0o600, m.service_account_private, "x")), "service-account"),
        ("a key the store does not know", w,
         with_files(w, PlannedFile("/etc/kubernetes/pki/new.key", 0o600, ec.generate_private_key(ec.SECP256R1()).private_bytes(
             serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), "x")),
         "does not know"),
        ("its own key, world-readable", c,
         with_files(c, replace={f"{PKI}/kube-apiserver.key": {"mode": 0o644}}), "mode is 0644"),
    ]


def test_planted_mistakes_are_found_by_content(ha):
    cluster, _, materials, plans = ha
    checker = Checker(cluster, materials)
    for node in plans:  # the real plans are clean
        assert checker.check(node, plans[node].files) == [], node
    for what, original, bad, words in planted(ha):
        findings = [str(f) for f in checker.check(original.node, bad.files)]
        assert findings, f"not caught: {what}"
        assert any(words in f for f in findings), f"{what}: {findings}"


def test_bundle_refuses_to_write_a_plan_that_breaks_least_privilege(ha_copy):
    cluster, out, materials, plans = ha_copy
    _, original, bad, _ = planted((cluster, out, materials, plans))[0]
    before = snapshot(out / "bundles")
    stream = [bad if p.node == original.node else p for p in plans.values()]
    with pytest.raises(HardwayError, match="node-0: /etc/kubernetes/pki/extra.pem: PEM block: the private key of ca"):
        write_bundles(cluster, materials, out, plans=iter(stream))
    assert snapshot(out / "bundles") == before


# ---------------------------------------------------------------- references --------------------

def test_every_referenced_path_is_in_the_bundle(ha):
    cluster, _, _, plans = ha
    for plan in plans.values():
        binaries = [b["path"] for b in plan.notes.binaries]
        assert unresolved(list(plan.files), [d.path for d in plan.directories], binaries) == [], plan.node


def test_a_missing_referenced_file_is_found(ha):
    cluster, _, _, plans = ha
    plan = plans["node-0"]
    binaries = [b["path"] for b in plan.notes.binaries]
    dirs = [d.path for d in plan.directories]
    files = [f for f in plan.files if f.path != "/etc/kubernetes/kubelet-config.yaml"]
    missing = unresolved(files, dirs, binaries)
    assert [(r.path, r.target) for r in missing] == [("/etc/systemd/system/kubelet.service", "/etc/kubernetes/kubelet-config.yaml")]
    # a binary the node is not told to download
    without_kubelet = [b for b in binaries if not b.endswith("/kubelet")]
    assert [r.target for r in unresolved(list(plan.files), dirs, without_kubelet)] == ["/usr/local/bin/kubelet"]
    # a directory nothing creates, inside a configuration directory (one that holds planned files)
    config = PlannedFile("/etc/kubernetes/extra.yaml", 0o644, b"staticPodPath: /etc/kubernetes/manifests\n", "x")
    assert [r.target for r in unresolved(list(plan.files) + [config], dirs, binaries)] == ["/etc/kubernetes/manifests"]
    # state a component makes at run time, inside a directory install.sh creates empty, is fine
    state = PlannedFile("/etc/kubernetes/extra.yaml", 0o644, b"dir: /var/lib/kubelet/pki\n", "x")
    assert unresolved(list(plan.files) + [state], dirs, binaries) == []


# ---------------------------------------------------------------- plan --------------------------

def moved(cluster_file: Path, tmp_path: Path, old: str, new: str) -> spec.Cluster:
    text = cluster_file.read_text()
    assert old in text
    target = tmp_path / "cluster.yaml"
    target.write_text(text.replace(old, new))
    return spec.load(target)


def test_plan_names_the_files_a_changed_address_changes(ha_copy, tmp_path):
    cluster, out, _, _ = ha_copy
    changed = moved(REPO / "examples" / "ha.yaml", tmp_path, "10.240.0.20", "10.240.0.30")  # node-0
    before = snapshot(out)
    result = {c.node: c for c in plan_bundles(changed, out)}
    assert snapshot(out) == before, "plan wrote something"
    node0 = {f.path: f for f in result["node-0"].files}
    cert = node0[f"{PKI}/kubelet-serving.crt"]
    assert cert.change == "changed" and "10.240.0.30" in cert.why and "10.240.0.20" in cert.why
    assert f"{PKI}/kubelet-serving.key" not in node0  # the key is kept
    assert any("10.240.0.30" in f.why for p, f in node0.items() if p.endswith("kubelet.service"))
    # No other node's certificate or key changes: only texts that mention node-0's address.
    for node, c in result.items():
        for f in c.files:
            if node != "node-0":
                assert not f.path.endswith((".crt", ".key", ".kubeconfig")), (node, f)
    assert {n for n, c in result.items() if c.status == "changed"} == {n.name for n in changed.nodes} | {WORKSTATION}
    # node-1 reaches node-0's pods through node-0's address: only the node table changes (its routes
    # and hosts lines come from it); the reason says so without a rendering
    assert {f.path for f in result["node-1"].files} == {"/etc/kubernetes/cluster-nodes.tsv"}
    assert "node table" in result["node-1"].note


def test_plan_lists_the_bundle_of_a_removed_worker(ha_copy, tmp_path):
    cluster, out, _, _ = ha_copy
    text = (REPO / "examples" / "ha.yaml").read_text()
    cut = re.sub(r"  - name: node-2\n(    .*\n)*", "", text)
    (tmp_path / "cluster.yaml").write_text(cut)
    smaller = spec.load(tmp_path / "cluster.yaml")
    assert "node-2" not in [n.name for n in smaller.nodes]
    result = {c.node: c for c in plan_bundles(smaller, out)}
    assert result["node-2"].status == "removed"
    assert (out / "bundles" / "node-2.tar.gz").exists()
    run = write_bundles(smaller, load_materials(smaller, out / "pki"), out)
    assert run.removed == ["node-2"] and not (out / "bundles" / "node-2.tar.gz").exists()


def test_plan_of_an_unchanged_spec_is_empty(ha):
    cluster, out, _, _ = ha
    result = plan_bundles(cluster, out)
    assert [c.status for c in result] == ["unchanged"] * (len(cluster.nodes) + 1)


# ---------------------------------------------------------------- check -------------------------

def rewrite_member(archive: Path, node: str, name: str, change) -> None:
    """Rewrite one member of a bundle archive in place (keeping everything else)."""
    with tarfile.open(archive) as tar:
        items = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            if info.name == f"{node}/{name}":
                data = change(data)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(gzip.compress(buf.getvalue()))


def test_check_finds_a_tampered_member(ha_copy):
    cluster, out, materials, _ = ha_copy
    rewrite_member(out / "bundles" / "controller-1.tar.gz", "controller-1", "rootfs/etc/systemd/system/etcd.service",
                   lambda d: d.replace(b"--client-cert-auth", b"--client-cert-auth=false"))
    report = check_bundles(cluster, out, materials)
    assert not report.ok
    bad = {r.node: r for r in report.rows if not r.ok}
    assert set(bad) == {"controller-1"}
    assert any("rootfs/etc/systemd/system/etcd.service: checksum mismatch" in p for p in bad["controller-1"].problems)


def test_check_finds_a_leaked_key_with_consistent_checksums(ha_copy):
    """A bundle written with a bad plan (checksums all correct) still fails on content."""
    cluster, out, materials, plans = ha_copy
    _, original, bad, _ = planted((cluster, out, materials, plans))[1]
    write_archive(out / "bundles" / "node-0.tar.gz", layout.members(cluster, bad))
    report = check_bundles(cluster, out, materials)
    problems = report.all_problems()
    assert problems == ["node-0: /etc/kubernetes/kubelet.kubeconfig: a kubeconfig's client-key-data: the private key "
                        "of kubelet-client of node-1, which a worker node must not hold"]


def test_check_finds_missing_and_stale_bundles(ha_copy):
    cluster, out, materials, _ = ha_copy
    (out / "bundles" / "node-1.tar.gz").unlink()
    shutil.copy(out / "bundles" / "node-0.tar.gz", out / "bundles" / "node-9.tar.gz")
    problems = check_bundles(cluster, out, materials).all_problems()
    assert any(p.startswith("node-1: no bundle") for p in problems)
    assert any(p.startswith("node-9.tar.gz: a bundle for a node that is not in the spec") for p in problems)


def test_check_cli_json_names_the_tampered_file(ha_copy, run_cli):
    cluster, out, _, _ = ha_copy
    spec_file = REPO / "examples" / "ha.yaml"
    r = run_cli(["check", "--spec", str(spec_file), "--out", str(out), "--json"], cwd=out.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["bundles"]["ok"] is True
    rewrite_member(out / "bundles" / "node-2.tar.gz", "node-2", "rootfs/etc/kubernetes/kubelet-config.yaml",
                   lambda d: d + b"# edited\n")
    r = run_cli(["check", "--spec", str(spec_file), "--out", str(out), "--json"], cwd=out.parent)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["bundles"]["ok"] is False
    row = next(b for b in data["bundles"]["bundles"] if b["node"] == "node-2")
    assert any("rootfs/etc/kubernetes/kubelet-config.yaml: checksum mismatch" in p for p in row["problems"])
    r = run_cli(["check", "--spec", str(spec_file), "--out", str(out)], cwd=out.parent)
    assert r.returncode == 1 and "kubelet-config.yaml: checksum mismatch" in r.stdout


def test_bundle_and_plan_cli(tmp_path, run_cli):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text((REPO / "examples" / "ha.yaml").read_text())
    r = run_cli(["plan"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bundles: 8 to create" in r.stdout and not (tmp_path / "out").exists()
    r = run_cli(["bundle"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bundles: 8 created, 0 updated, 0 unchanged, 0 removed" in r.stdout
    before = snapshot(tmp_path / "out")
    r = run_cli(["bundle"], cwd=tmp_path)
    assert "bundles: 0 created, 0 updated, 8 unchanged, 0 removed" in r.stdout
    assert snapshot(tmp_path / "out") == before
    spec_file.write_text(spec_file.read_text().replace("10.240.0.22", "10.240.0.32"))  # node-2
    r = run_cli(["plan"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # one line per bundle, what changed and why; the file-by-file reasons are in `plan --json`
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+) changed: (.*)$", r.stdout, re.M)}
    assert set(lines) == {"lb", "controller-0", "controller-1", "controller-2", "node-0", "node-1", "node-2",
                          WORKSTATION}, r.stdout
    assert "certificates, keys or secrets it carries changed" in lines["node-2"]
    assert "/etc/kubernetes/pki/kubelet-serving.crt" in lines["node-2"]
    assert lines["node-0"] == "the node table changed (1 file(s): /etc/kubernetes/cluster-nodes.tsv)"
    r = run_cli(["plan", "--json"], cwd=tmp_path)
    node2 = next(b for b in json.loads(r.stdout)["bundles"] if b["node"] == "node-2")
    assert any(f["path"] == "/etc/kubernetes/pki/kubelet-serving.crt" and "kubelet-serving of node-2 re-issued" in f["why"]
               for f in node2["files"])
    assert snapshot(tmp_path / "out") == before


def test_bundle_cli_bad_out_is_a_clear_error(tmp_path, run_cli):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text((REPO / "examples" / "ha.yaml").read_text())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bundles").write_text("a file where the bundles directory goes\n")
    r = run_cli(["bundle"], cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "bundles" in r.stderr and "not a directory" in r.stderr
    assert (tmp_path / "out" / "bundles").read_text().startswith("a file")


def _sh_block_after(markdown: str, heading: str) -> str:
    """The first ```sh block after `heading` in a bundle's INSTALL.md or README.md."""
    rest = markdown[markdown.index(heading):]
    return re.search(r"```sh\n(.*?)```", rest, re.S).group(1)


def test_hosts_lines_are_replaced_between_markers_not_appended_twice(tmp_path, run_cli):
    """INSTALL.md's hosts commands, run twice against a hosts file with the user's own lines, leave one
    copy of the cluster's lines and the user's lines as they were; the same for the workstation's file."""
    import subprocess
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text((REPO / "examples" / "kthw.yaml").read_text())
    assert run_cli(["bundle"], cwd=tmp_path).returncode == 0
    bundles = tmp_path / "out" / "bundles"
    install_md = read_archive(bundles / "node-0.tar.gz", "node-0")["INSTALL.md"].data.decode()
    ws = {name: m.data.decode() for name, m in read_archive(bundles / "workstation.tar.gz", WORKSTATION).items()}
    hosts = tmp_path / "etc-hosts"
    own = "127.0.0.1 localhost\n10.9.9.9 printer\n"
    hosts.write_text(own)
    commands = _sh_block_after(install_md, "## 4. Network").replace("sudo ", "")
    commands = commands.replace("/etc/hosts", str(hosts))
    # the node's hardway-nodes.sh and table, where install.sh puts them: here, from the bundle
    extract_bundle(bundles / "node-0.tar.gz", tmp_path / "x")
    rootfs = tmp_path / "x" / "node-0" / "rootfs"
    tool = "/usr/local/sbin/hardway-nodes.sh"
    assert f"{tool} hosts" in commands
    commands = commands.replace(f"{tool} hosts", f"sh {rootfs}{tool} hosts {rootfs}/etc/kubernetes/cluster-nodes.tsv")
    for _ in range(2):
        subprocess.run(["sh", "-c", commands], check=True)
    cluster = load("kthw")
    text = hosts.read_text()
    assert text.startswith(own)
    for n in cluster.nodes:
        assert sum(1 for line in text.splitlines() if line.split()[:1] == [str(n.address)]) == 1, text
    assert text.count("# BEGIN hardway kubernetes-the-hard-way") == 1
    # the same lines as the workstation's hosts file (and the plan's notes, which the lab uses)
    block = text[text.index("# BEGIN"):]
    assert block.splitlines() == [line for line in ws["hosts"].splitlines() if not line.startswith("# ") or
                                  line.startswith(("# BEGIN", "# END"))]
    # the workstation's README step, with its hosts file, replaces the same block
    (tmp_path / "hosts").write_text(ws["hosts"])
    commands = _sh_block_after(ws["README.md"], "**Names.**").replace("sudo ", "")
    commands = commands.replace("/etc/hosts", str(hosts))
    for _ in range(2):
        subprocess.run(["sh", "-c", commands], check=True, cwd=tmp_path)
    again = hosts.read_text()
    assert again.startswith(own) and again.count("# BEGIN hardway kubernetes-the-hard-way") == 1
    assert sum(1 for line in again.splitlines() if line.startswith("10.240.0.20 ")) == 1, again


def test_kubelet_resolv_conf_from_the_spec_reaches_the_bundles(tmp_path, run_cli):
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
    data["kubelet"] = {"resolvConf": "/run/systemd/resolve/resolv.conf"}
    node1 = next(n for n in data["nodes"] if n["name"] == "node-1")
    node1["kubelet"] = {"resolvConf": "/etc/resolv-kubelet.conf"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli(["bundle"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for node, expected in (("node-0", "/run/systemd/resolve/resolv.conf"), ("node-1", "/etc/resolv-kubelet.conf")):
        config = read_archive(tmp_path / "out" / "bundles" / f"{node}.tar.gz", node)[
            "rootfs/etc/kubernetes/kubelet-config.yaml"].data
        assert yaml.safe_load(config)["resolvConf"] == expected
