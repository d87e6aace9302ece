"""The PKI store on disk: reconcile keeps, creates and re-issues exactly what it should, refuses to
replace what must never be replaced, survives being killed, adopts an external CA, locks, checks,
renews. ECDSA clusters keep these fast; the certificate contents are covered by test_pki_certs.py.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from hardway import spec
from hardway.errors import HardwayError
from hardway.pki import (check_store, generate_materials, issue, load_materials, parse_import, plan_actions,
                         reconcile, renew)
from hardway import fsutil
from hardway.pki import store as store_module
from helpers import REPO
from test_pki_certs import need_openssl  # one definition of the OpenSSL prerequisite

sys.path.insert(0, str(REPO / "benchmarks"))
from make_large import large_spec  # noqa: E402


def cluster_of(example: str = "ha", edit=None, **pki) -> spec.Cluster:
    data = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    data.setdefault("pki", {}).update({"keyAlgorithm": "ECDSA-P256", **pki})
    if edit:
        edit(data)
    return spec.loads(yaml.safe_dump(data), source=f"{example}.yaml")


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file of the store (not the lock, not the record of what was verified, which changes with
    every re-issued leaf: test_pki_record.py covers it): bytes, mtime, mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in (".lock", "verified.json"):
            st = p.stat()
            out[str(p.relative_to(root))] = (p.read_bytes(), st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@pytest.fixture
def ha():
    return cluster_of("ha")


@pytest.fixture
def store(tmp_path, ha) -> Path:
    root = tmp_path / "out" / "pki"
    reconcile(ha, root)
    return root


def actions_by(result_actions) -> dict[tuple[str, str | None], object]:
    return {(a.entry, a.node): a for a in result_actions}


# --- idempotency and change ----------------------------------------------------------------------

def test_second_run_keeps_everything_untouched(ha, store):
    before = snapshot(store)
    time.sleep(0.01)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"}
    assert len(result.actions) == 3 + 2 + 3 * 3 + 2 * 3 + 9
    assert snapshot(store) == before
    assert result.materials.cert("ca") == before["ca.crt"][0]


def test_first_run_creates_everything_and_materials_load_back(tmp_path, ha):
    result = reconcile(ha, tmp_path / "pki")
    assert {a.action for a in result.actions} == {"create"}
    loaded = load_materials(ha, tmp_path / "pki")
    assert loaded.certs == result.materials.certs and loaded.keys == result.materials.keys
    assert loaded.encryption_key == result.materials.encryption_key
    assert base64.b64decode((tmp_path / "pki" / "encryption.key").read_text()) == loaded.encryption_key


def test_changed_controller_address_reissues_only_what_includes_it(ha, store):
    before = snapshot(store)
    moved = cluster_of("ha", edit=lambda d: d["nodes"][2].update(address="10.240.0.99"))  # controller-1
    assert [a for a in plan_actions(moved, store) if a.action != "keep"]
    assert snapshot(store) == before, "plan writes nothing"
    result = reconcile(moved, store)
    redone = {(a.entry, a.node) for a in result.actions if a.action != "keep"}
    assert redone == {("kube-apiserver", "controller-1"), ("etcd-server", "controller-1"), ("etcd-peer", "controller-1")}
    for a in result.actions:
        if a.action == "reissue":
            assert "+IP:10.240.0.99" in a.reason and "-IP:10.240.0.12" in a.reason, a.reason
    assert changed(before, snapshot(store)) == {"nodes/controller-1/kube-apiserver.crt",
                                                "nodes/controller-1/etcd-server.crt",
                                                "nodes/controller-1/etcd-peer.crt"}, "keys kept, others untouched"
    cert = x509.load_pem_x509_certificate((store / "nodes/controller-1/kube-apiserver.crt").read_bytes())
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert any(str(ip) == "10.240.0.99" for ip in ips)


def test_changed_worker_address_reissues_its_serving_cert_only(ha, store):
    before = snapshot(store)
    moved = cluster_of("ha", edit=lambda d: d["nodes"][5].update(address="10.240.0.77"))  # node-1
    result = reconcile(moved, store)
    assert {(a.entry, a.node) for a in result.actions if a.action != "keep"} == {("kubelet-serving", "node-1")}
    assert changed(before, snapshot(store)) == {"nodes/node-1/kubelet-serving.crt"}


def test_changed_key_algorithm_rekeys_leaves_but_never_cas(ha, store):
    before = snapshot(store)
    result = reconcile(cluster_of("ha", keyAlgorithm="ECDSA-P384"), store)
    acts = actions_by(result.actions)
    assert acts[("ca", None)].action == "keep" and "never re-keyed" in acts[("ca", None)].reason
    assert acts[("service-account", None)].action == "keep"
    assert acts[("admin", None)].action == "reissue" and "ECDSA-P384" in acts[("admin", None)].reason
    after = snapshot(store)
    for name in ("ca.crt", "ca.key", "etcd-ca.key", "service-account.key", "encryption.key"):
        assert after[name] == before[name]
    assert after["admin.key"][0] != before["admin.key"][0]
    assert issue.key_algorithm(issue.load_private_key(after["admin.key"][0])) == "ECDSA-P384"


def test_new_worker_and_removed_worker(ha, store):
    before = snapshot(store)
    grown = cluster_of("ha", edit=lambda d: d["nodes"].append({"name": "node-3", "address": "10.240.0.23",
                                                                "roles": ["worker"]}))
    result = reconcile(grown, store)
    assert {(a.entry, a.node) for a in result.actions if a.action != "keep"} == \
        {("kubelet-client", "node-3"), ("kubelet-serving", "node-3")}
    assert all(a.action == "create" for a in result.actions if a.node == "node-3")
    assert not changed(before, {k: v for k, v in snapshot(store).items() if not k.startswith("nodes/node-3/")})
    shrunk = cluster_of("ha", edit=lambda d: d["nodes"].pop())  # node-2 leaves the spec
    result = reconcile(shrunk, store)
    assert {a.action for a in result.actions} == {"keep"}
    assert any("node-2" in n for n in result.notes), "its directory is kept and reported"
    assert (store / "nodes" / "node-2").is_dir()


# --- tampering -------------------------------------------------------------------------------------

def _reissued(result, entry, node=None):
    a = actions_by(result.actions)[(entry, node)]
    assert a.action == "reissue", a
    return a.reason


def test_leaf_cert_swapped_for_another_is_reissued_keeping_its_key(ha, store):
    before = snapshot(store)
    shutil.copy(store / "kube-scheduler.crt", store / "admin.crt")
    result = reconcile(ha, store)
    reason = _reissued(result, "admin")
    assert "does not match its key" in reason and "subject" in reason and "key kept" in reason
    after = snapshot(store)
    assert after["admin.key"] == before["admin.key"]
    admin = x509.load_pem_x509_certificate(after["admin.crt"][0])
    assert admin.subject.rfc4514_string() == "CN=admin,O=hardway:cluster-admins"
    assert changed(before, after) == {"admin.crt"}


def test_corrupt_leaf_key_gets_a_new_key(ha, store):
    (store / "nodes/node-0/kubelet-client.key").write_bytes(b"-----BEGIN EC PRIVATE KEY-----\ngarbage\n")
    result = reconcile(ha, store)
    assert "key unreadable" in _reissued(result, "kubelet-client", "node-0")
    assert check_store(ha, store).ok


def test_corrupt_leaf_cert_is_reissued(ha, store):
    p = store / "nodes/controller-0/etcd-peer.crt"
    p.write_bytes(p.read_bytes()[:200])
    assert "certificate unreadable" in _reissued(reconcile(ha, store), "etcd-peer", "controller-0")


def test_leaf_signed_by_another_ca_is_reissued(ha, store):
    rogue_key = issue.generate_key("ECDSA-P256")
    rogue = issue.make_ca("kubernetes", rogue_key, timedelta(days=30))  # same name, different key
    good = x509.load_pem_x509_certificate((store / "admin.crt").read_bytes())
    key = issue.load_private_key((store / "admin.key").read_bytes())
    from hardway.pki.catalog import Identity
    forged = issue.issue(Identity("admin", ("hardway:cluster-admins",), frozenset({"clientAuth"}), (), ()),
                         key.public_key(), rogue, rogue_key, timedelta(days=30))
    assert forged.subject == good.subject
    (store / "admin.crt").write_bytes(issue.cert_pem(forged))
    assert "not signed by the current ca CA" in _reissued(reconcile(ha, store), "admin")


def test_expired_leaf_is_reissued(ha, store):
    ca = x509.load_pem_x509_certificate((store / "ca.crt").read_bytes())
    ca_key = issue.load_private_key((store / "ca.key").read_bytes())
    key = issue.load_private_key((store / "super-admin.key").read_bytes())
    from hardway.pki.catalog import Identity
    old = issue.issue(Identity("super-admin", ("system:masters",), frozenset({"clientAuth"}), (), ()), key.public_key(),
                      ca, ca_key, timedelta(days=1), at=issue.now() - timedelta(days=3))
    (store / "super-admin.crt").write_bytes(issue.cert_pem(old))
    report = check_store(ha, store)
    assert not report.ok and any("super-admin" in p and "expired" in p for p in report.problems)
    assert "expired" in _reissued(reconcile(ha, store), "super-admin")


@pytest.mark.parametrize("damage, words", [
    (lambda s: (s / "ca.crt").write_bytes(b"not a certificate"), ["ca.crt", "not a readable PEM certificate"]),
    (lambda s: (s / "ca.key").write_bytes((s / "etcd-ca.key").read_bytes()), ["ca.crt", "key does not match"]),
    (lambda s: (s / "etcd-ca.key").unlink(), ["etcd-ca.crt is present but etcd-ca.key is missing"]),
    (lambda s: [(s / "ca.crt").unlink(), (s / "ca.key").unlink()], ["ca.crt and ca.key are missing", "--import-ca"]),
    (lambda s: (s / "front-proxy-ca.crt").unlink(), ["front-proxy-ca.crt is missing", "front-proxy-client.crt"]),
    (lambda s: (s / "service-account.key").write_bytes(b"junk"), ["service-account.key", "never replaced"]),
    (lambda s: (s / "service-account.key").unlink(), ["service-account.key is missing", "service-account.pub"]),
    (lambda s: (s / "service-account.pub").write_bytes(issue.public_pem(issue.generate_key("ECDSA-P256"))),
     ["service-account.pub does not match"]),
    (lambda s: (s / "encryption.key").write_text(base64.b64encode(b"short").decode()), ["encryption.key", "5 bytes"]),
], ids=["ca-cert-corrupt", "ca-key-swapped", "ca-key-missing", "ca-gone-leaves-present", "ca-cert-missing",
        "sa-key-corrupt", "sa-key-missing", "sa-pub-mismatch", "encryption-key-short"])
def test_never_replaced_items_stop_the_run_and_change_nothing(ha, store, damage, words):
    damage(store)
    before = snapshot(store)
    with pytest.raises(HardwayError) as e:
        reconcile(ha, store)
    for w in words:
        assert w in str(e.value)
    assert snapshot(store) == before, "nothing written"
    assert any(a.action == "error" for a in plan_actions(ha, store))
    assert not check_store(ha, store).ok


def test_missing_sa_public_key_is_derived_again(ha, store):
    pub = (store / "service-account.pub").read_bytes()
    (store / "service-account.pub").unlink()
    result = reconcile(ha, store)
    assert actions_by(result.actions)[("service-account", None)].action == "reissue"
    assert (store / "service-account.pub").read_bytes() == pub


def test_interrupted_first_run_ca_key_without_cert_recovers(tmp_path, ha):
    root = tmp_path / "pki"
    root.mkdir(mode=0o700)
    key = issue.generate_key("ECDSA-P256")
    (root / "ca.key").write_bytes(issue.private_pem(key))
    os.chmod(root / "ca.key", 0o600)
    result = reconcile(ha, root)
    assert actions_by(result.actions)[("ca", None)].action == "reissue"
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    assert issue.same_public_key(ca.public_key(), key)
    assert check_store(ha, root).ok


# --- crash safety -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_after", [0, 1, 3, 4, 6, 8, 10, 25, 40, 55])
def test_a_run_failing_between_writes_leaves_a_usable_store(tmp_path, monkeypatch, ha, fail_after):
    root = tmp_path / "pki"
    real = fsutil.os.replace  # the rename of the one durable-write path (hardway/fsutil.py)
    done = []

    def flaky(tmp, path):
        if len(done) >= fail_after:
            raise KeyboardInterrupt("simulated kill")
        real(tmp, path)
        done.append(path)

    monkeypatch.setattr(fsutil.os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        reconcile(ha, root)
    monkeypatch.setattr(fsutil.os, "replace", real)
    assert len(done) == fail_after, "the run was killed at the rename it was meant to be"
    assert not store_module.leftover_temp_files(root)
    survived = snapshot(root)
    # every file the killed run wrote is whole: a certificate parses, a key parses
    for rel, (data, _, _) in survived.items():
        if rel.endswith(".crt"):
            issue.load_cert(data)
        elif rel.endswith(".key") and rel != "encryption.key":
            issue.load_private_key(data)
    reconcile(ha, root)
    report = check_store(ha, root)
    assert report.ok, report.problems
    after = snapshot(root)
    for rel in ("ca.crt", "ca.key", "etcd-ca.crt", "service-account.key", "encryption.key"):
        if rel in survived:
            assert after[rel][0] == survived[rel][0], f"{rel} written by the killed run is kept"


def test_sigkill_mid_run_then_rerun(tmp_path):
    spec_file = tmp_path / "big.yaml"
    spec_file.write_text(large_spec(400))
    root = tmp_path / "pki"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from hardway import spec
        from hardway.pki import reconcile
        from hardway.pki import store
        store.DiskStore.BATCH = 16  # many small commits, so the kill lands between some of them
        reconcile(spec.load({str(spec_file)!r}), Path({str(root)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        nodes = root / "nodes"
        if nodes.is_dir() and sum(1 for _ in nodes.iterdir()) >= 60:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was still going when killed"
    cluster = spec.load(spec_file)
    survived = snapshot(root)
    assert len(survived) < 4 * 400, "killed before the end"
    result = reconcile(cluster, root)
    assert any(a.action == "keep" for a in result.actions) and any(a.action != "keep" for a in result.actions)
    assert check_store(cluster, root).ok
    after = snapshot(root)
    assert after["ca.key"][0] == survived["ca.key"][0]


def test_leftover_temp_files_are_removed(ha, store):
    junk = store / "nodes" / "node-0" / ".hardway-kubelet-client.key.abcd1234.tmp"
    junk.write_bytes(b"half a key")
    assert any("interrupted" in w for w in check_store(ha, store).warnings)
    result = reconcile(ha, store)
    assert not junk.exists() and any("interrupted" in n for n in result.notes)


# --- modes, lock ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_modes_whatever_the_umask(tmp_path, ha, umask):
    old = os.umask(umask)
    try:
        root = tmp_path / "pki"
        reconcile(ha, root)
    finally:
        os.umask(old)
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode == 0o700, p
        elif p.suffix == ".key" or p.name == ".lock":
            assert mode == 0o600, p
        else:
            assert mode == 0o644, p


def test_loosened_modes_are_flagged_then_tightened(ha, store):
    os.chmod(store / "ca.key", 0o644)
    os.chmod(store / "nodes", 0o755)
    problems = check_store(ha, store).problems
    assert any("ca.key" in p and "0644" in p for p in problems) and any("nodes" in p for p in problems)
    reconcile(ha, store)
    assert stat.S_IMODE((store / "ca.key").stat().st_mode) == 0o600
    assert check_store(ha, store).ok


def test_lock_refuses_a_concurrent_run(ha, store):
    before = snapshot(store)
    fd = os.open(store / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(HardwayError, match="another hardway run"):
            reconcile(ha, store)
        with pytest.raises(HardwayError, match="another hardway run"):
            renew(ha, store)
    finally:
        os.close(fd)
    assert snapshot(store) == before
    reconcile(ha, store)  # free again


def test_lock_held_by_another_process(ha, store):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(store / '.lock')!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(HardwayError, match=r"another hardway run .*\.lock"):
            reconcile(ha, store)
    finally:
        holder.kill()
        holder.wait()


# --- bring your own CA ------------------------------------------------------------------------------

def _openssl_ca(openssl, tmp: Path, name: str, rsa: bool = False) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    newkey = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run([openssl, "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", f"/O=Example Corp/CN={name}", "-days", "3650",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"],
                   check=True, capture_output=True)
    return cert, key


def test_import_an_external_ca_made_with_openssl(tmp_path, ha):
    openssl = need_openssl()
    cert, key = _openssl_ca(openssl, tmp_path, "corp-root", rsa=True)
    root = tmp_path / "pki"
    result = reconcile(ha, root, import_ca=[parse_import(f"ca={cert},{key}")])
    assert actions_by(result.actions)[("ca", None)].action == "create"
    assert (root / "ca.crt").read_bytes() == issue.cert_pem(issue.load_cert(cert.read_bytes()))
    # leaves of the imported CA (ECDSA leaves under an RSA CA) verify with the real openssl
    r = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(cert),
                        str(root / "nodes/controller-0/kube-apiserver.crt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert check_store(ha, root).ok
    # importing the same CA again is a no-op; a different one is refused and changes nothing
    before = snapshot(root)
    again = reconcile(ha, root, import_ca=[parse_import(f"ca={cert},{key}")])
    assert actions_by(again.actions)[("ca", None)].action == "keep"
    other_cert, other_key = _openssl_ca(openssl, tmp_path, "other-root")
    with pytest.raises(HardwayError, match="already has a different ca"):
        reconcile(ha, root, import_ca=[parse_import(f"ca={other_cert},{other_key}")])
    assert snapshot(root) == before


def test_import_replaces_a_moved_away_ca_and_reissues_its_leaves(tmp_path, ha, store):
    openssl = need_openssl()
    (store / "etcd-ca.crt").rename(tmp_path / "old-etcd-ca.crt")
    (store / "etcd-ca.key").rename(tmp_path / "old-etcd-ca.key")
    cert, key = _openssl_ca(openssl, tmp_path, "corp-etcd")
    result = reconcile(ha, store, import_ca=[parse_import(f"etcd-ca={cert},{key}")])
    redone = {(a.entry, a.node) for a in result.actions if a.action == "reissue"}
    assert redone == {("apiserver-etcd-client", None), ("etcd-healthcheck-client", None)} | \
        {(e, f"controller-{i}") for e in ("etcd-server", "etcd-peer") for i in range(3)}
    assert all("not signed by the current etcd-ca CA" in a.reason for a in result.actions if a.action == "reissue")
    assert check_store(ha, store).ok


@pytest.mark.parametrize("case", ["not-a-ca", "key-mismatch", "expired", "bad-name", "bad-syntax", "missing-file",
                                  "encrypted-key"])
def test_import_refuses_what_is_not_a_usable_ca(tmp_path, case):
    openssl = need_openssl()
    cert, key = _openssl_ca(openssl, tmp_path, "good")
    arg = f"ca={cert},{key}"
    if case == "not-a-ca":
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=leaf", "-days", "30",
                        "-addext", "basicConstraints=critical,CA:FALSE"], check=True, capture_output=True)
        want = "not a CA"
    elif case == "key-mismatch":
        _, other_key = _openssl_ca(openssl, tmp_path, "other")
        arg = f"ca={cert},{other_key}"
        want = "does not match"
    elif case == "expired":
        k = issue.generate_key("ECDSA-P256")
        old = issue.make_ca("old", k, timedelta(days=1), at=issue.now() - timedelta(days=5))
        cert.write_bytes(issue.cert_pem(old))
        key.write_bytes(issue.private_pem(k))
        want = "expired"
    elif case == "bad-name":
        arg = f"kube-ca={cert},{key}"
        want = "unknown CA 'kube-ca'"
    elif case == "bad-syntax":
        arg = f"ca={cert}"
        want = "NAME=CERT,KEY"
    elif case == "missing-file":
        arg = f"ca={tmp_path / 'nope.pem'},{key}"
        want = "cannot read"
    else:
        subprocess.run([openssl, "pkey", "-in", str(key), "-out", str(key) + ".enc", "-aes256", "-passout", "pass:x"],
                       check=True, capture_output=True)
        arg = f"ca={cert},{key}.enc"
        want = "encrypted"
    with pytest.raises(HardwayError) as e:
        parse_import(arg)
    assert want in str(e.value)


# --- check and renew ------------------------------------------------------------------------------------

def test_check_flags_a_certificate_expiring_within_30_days(ha, store):
    ca = x509.load_pem_x509_certificate((store / "ca.crt").read_bytes())
    ca_key = issue.load_private_key((store / "ca.key").read_bytes())
    key = issue.load_private_key((store / "nodes/node-1/kubelet-client.key").read_bytes())
    from hardway.pki.catalog import Identity
    soon = issue.issue(Identity("system:node:node-1", ("system:nodes",), frozenset({"clientAuth"}), (), ()),
                       key.public_key(), ca, ca_key, timedelta(days=10))
    (store / "nodes/node-1/kubelet-client.crt").write_bytes(issue.cert_pem(soon))
    report = check_store(ha, store)
    assert report.ok, "expiring soon is a warning, not a failure"
    rows = {(r.certificate, r.node): r for r in report.rows}
    assert rows[("kubelet-client", "node-1")].status == "warning"
    assert rows[("kubelet-client", "node-0")].status == "ok"
    assert any("node-1" in w and "renew" in w for w in report.warnings)
    data = report.to_dict()
    row = next(r for r in data["certificates"] if r["certificate"] == "kubelet-client" and r["node"] == "node-1")
    assert row["status"] == "warning" and 9 * 86400 < row["residual_seconds"] <= 10 * 86400
    assert row["residual"] in ("9d", "10d")
    assert len(data["certificates"]) == 3 + 3 * 3 + 2 * 3 + 9
    # `pki` keeps it (valid and matching); `renew` is the tool for it
    assert actions_by(reconcile(ha, store).actions)[("kubelet-client", "node-1")].action == "keep"


def test_renewal_late_in_the_cas_life_is_capped_at_the_ca(tmp_path):
    short = cluster_of("ha", caValidity="30d", certValidity="30d")
    root = tmp_path / "pki"
    reconcile(short, root, at=issue.now() - timedelta(days=20))  # the store was made 20 days ago
    renew(short, root, entry="admin")
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    admin = x509.load_pem_x509_certificate((root / "admin.crt").read_bytes())
    assert admin.not_valid_after_utc == ca.not_valid_after_utc
    assert admin.not_valid_after_utc - admin.not_valid_before_utc < timedelta(days=11)
    report = check_store(short, root)
    assert report.ok and {r.status for r in report.rows} == {"warning"}, "everything expires within 30 days"


def test_check_on_a_missing_store(tmp_path, ha):
    report = check_store(ha, tmp_path / "nothing")
    assert not report.ok and "run `hardway pki`" in report.problems[0]


def test_renew_keeps_keys_unless_rotating(ha, store):
    before = snapshot(store)
    result = renew(ha, store)
    after = snapshot(store)
    leaves = {k for k in before if k.endswith(".crt") and not k.endswith("ca.crt")}
    assert {k for k in changed(before, after)} == leaves, "every leaf certificate, nothing else"
    for k in leaves:
        old = x509.load_pem_x509_certificate(before[k][0])
        new = x509.load_pem_x509_certificate(after[k][0])
        assert new.subject == old.subject and new.serial_number != old.serial_number
        assert new.extensions.get_extension_for_class(x509.ExtendedKeyUsage) == \
            old.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    cas = [a for a in result.actions if a.entry.endswith("ca")]
    assert len(cas) == 3 and all(a.action == "keep" and "valid until" in a.reason for a in cas)
    assert check_store(ha, store).ok
    renew(ha, store, entry="admin", rotate_keys=True)
    rotated = snapshot(store)
    assert changed(after, rotated) == {"admin.crt", "admin.key"}


def test_renew_by_node_and_by_entry(ha, store):
    before = snapshot(store)
    renew(ha, store, node="node-2")
    assert changed(before, snapshot(store)) == {"nodes/node-2/kubelet-client.crt", "nodes/node-2/kubelet-serving.crt"}
    before = snapshot(store)
    renew(ha, store, entry="etcd-peer", node="controller-0")
    assert changed(before, snapshot(store)) == {"nodes/controller-0/etcd-peer.crt"}


@pytest.mark.parametrize("kwargs, words", [
    ({"entry": "ca"}, "never renews a CA"),
    ({"entry": "kubelet"}, "not a certificate of the catalog"),
    ({"node": "nobody"}, "not a node"),
    ({"node": "lb"}, "nothing to renew"),
])
def test_renew_refuses(ha, store, kwargs, words):
    before = snapshot(store)
    with pytest.raises(HardwayError, match=words):
        renew(ha, store, **kwargs)
    assert snapshot(store) == before


def test_renew_needs_a_store(tmp_path, ha):
    with pytest.raises(HardwayError, match="run `hardway pki` first"):
        renew(ha, tmp_path / "pki")


def test_load_materials_of_an_incomplete_store(ha, store):
    (store / "nodes/node-0/kubelet-serving.key").unlink()
    with pytest.raises(HardwayError, match=r"incomplete.*kubelet-serving.key.*hardway pki"):
        load_materials(ha, store)


def test_generate_materials_touches_no_disk(tmp_path, ha, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = generate_materials(ha)
    assert list(tmp_path.iterdir()) == []
    assert m.cert("kube-apiserver", "controller-2") != m.cert("kube-apiserver", "controller-0")
    with pytest.raises(KeyError, match="per node"):
        m.cert("kube-apiserver")


@pytest.mark.slow
def test_large_example_completes_then_reruns_as_a_no_op(tmp_path):
    cluster = spec.load(REPO / "examples" / "large.yaml")
    assert cluster.key_algorithm == "ECDSA-P256" and len(cluster.workers) == 1000
    root = tmp_path / "pki"
    first = reconcile(cluster, root)
    assert len(first.actions) == 3 + 2 + 3 * 3 + 2 * 1000 + 9
    assert {a.action for a in first.actions} == {"create"}
    before = snapshot(root)
    assert len([d for d in (root / "nodes").iterdir()]) == 1003
    second = reconcile(cluster, root)
    assert {a.action for a in second.actions} == {"keep"}
    assert snapshot(root) == before


def test_preview_computes_what_pki_would_leave_without_writing(ha, store):
    moved = cluster_of("ha", edit=lambda d: d["nodes"][4].update(address="10.240.0.66"))  # node-0
    before = snapshot(store)
    from hardway.pki import preview
    result = preview(moved, store)
    assert snapshot(store) == before
    assert {(a.entry, a.node) for a in result.actions if a.action != "keep"} == {("kubelet-serving", "node-0")}
    cert = x509.load_pem_x509_certificate(result.materials.cert("kubelet-serving", "node-0"))
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert [str(ip) for ip in ips] == ["10.240.0.66"]
    assert result.materials.key("kubelet-serving", "node-0") == before["nodes/node-0/kubelet-serving.key"][0]
    assert result.materials.cert("admin") == before["admin.crt"][0]
