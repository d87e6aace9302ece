"""verified.json, the record of what each leaf of the PKI store was last verified as: both sides of
every skip. A run with nothing to do keeps a leaf the record vouches for without parsing it; any
change (a file's bytes, a spec value the leaf carries, the key algorithm, the CA, the clock) gets the
full check and so the same verdict as without a record; a missing or broken record is no error;
`check` never trusts it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from hardway import fsutil
from hardway.pki import check_store, default_catalog, issue, plan_actions, preview, reconcile, renew
from hardway.pki.record import CHECKS, RECORD, digest, read_record, record_bytes
from test_pki_store import actions_by, cluster_of, snapshot

LEAVES = 2 * 3 + 3 * 3 + 9  # the ha example: 2 per worker (3), 3 per controller (3), 9 cluster-wide


class Parses:
    """Counts the certificates a run parses (issue.load_cert: every full check of a leaf or a CA)."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = issue.load_cert

        def counting(pem):
            self.count += 1
            return real(pem)

        monkeypatch.setattr(issue, "load_cert", counting)


@pytest.fixture
def ha():
    return cluster_of("ha")


@pytest.fixture
def store(tmp_path, ha) -> Path:
    root = tmp_path / "out" / "pki"
    reconcile(ha, root)
    return root


def vouches(store: Path) -> dict:
    return read_record((store / RECORD).read_bytes())


def reissued(result) -> set[tuple[str, str | None]]:
    return {(a.entry, a.node) for a in result.actions if a.action == "reissue"}


# --- the skip itself -------------------------------------------------------------------------------

def test_first_run_records_every_leaf_it_issued(ha, store):
    record = vouches(store)
    assert len(record) == LEAVES
    v = record["nodes/node-0/kubelet-client"]
    assert v.crt == digest((store / "nodes/node-0/kubelet-client.crt").read_bytes())
    assert v.key == digest((store / "nodes/node-0/kubelet-client.key").read_bytes())
    assert v.ca == digest((store / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((store / "nodes/node-0/kubelet-client.crt").read_bytes())
    assert v.not_after == int(cert.not_valid_after_utc.timestamp())
    assert v.not_before == int(cert.not_valid_before_utc.timestamp())
    assert stat.S_IMODE((store / RECORD).stat().st_mode) == 0o644  # digests only, no secret


def test_a_run_with_nothing_to_do_parses_only_the_cas(ha, store, monkeypatch):
    parses = Parses(monkeypatch)
    record = (store / RECORD).read_bytes()
    mtime = (store / RECORD).stat().st_mtime_ns
    time.sleep(0.01)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"}
    assert parses.count == 3, "the three CAs get their full check; no leaf is parsed"
    assert (store / RECORD).read_bytes() == record and (store / RECORD).stat().st_mtime_ns == mtime, "not rewritten"
    reasons = actions_by(result.actions)
    assert reasons[("admin", None)].reason.startswith("valid until ")


def test_without_a_record_every_leaf_gets_the_full_check_and_the_record_comes_back(ha, store, monkeypatch):
    record = (store / RECORD).read_bytes()
    (store / RECORD).unlink()
    parses = Parses(monkeypatch)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"}
    assert parses.count == 3 + LEAVES
    assert (store / RECORD).read_bytes() == record, "the same record, made from the full check"


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b"{ not json"),
    lambda p: p.write_bytes(b"\xff\xfe\x00"),
    lambda p: p.write_text(json.dumps({"format": 1, "checks": CHECKS, "leaves": {"admin": ["0" * 64] * 3}})),
    lambda p: p.write_text(p.read_text().replace(CHECKS, "leaf-checks-0")),  # made by other checks
    lambda p: p.write_text(p.read_text().replace('"format": 1', '"format": 99')),
    lambda p: p.write_text("[]"),
    lambda p: p.write_bytes(b""),
], ids=["not-json", "not-utf8", "short-entry", "other-checks", "other-format", "not-an-object", "empty"])
def test_a_broken_record_means_verify_everything_without_an_error(ha, store, monkeypatch, damage):
    good = (store / RECORD).read_bytes()
    damage(store / RECORD)
    parses = Parses(monkeypatch)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"} and not result.notes
    assert parses.count == 3 + LEAVES
    assert (store / RECORD).read_bytes() == good


def test_a_record_that_is_a_fifo_is_never_read_and_no_error(ha, store):
    (store / RECORD).unlink()
    os.mkfifo(store / RECORD)  # never opened for a blocking read
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"}
    assert len(vouches(store)) == LEAVES, "replaced by a real record"


# --- a changed file: the full check ------------------------------------------------------------------

def test_a_certificate_swapped_for_another_valid_one_is_caught(ha, store, monkeypatch):
    # Both are valid certificates of the same CA: only the full check tells them apart.
    shutil.copy(store / "nodes/node-1/kubelet-client.crt", store / "nodes/node-0/kubelet-client.crt")
    parses = Parses(monkeypatch)
    result = reconcile(ha, store)
    assert reissued(result) == {("kubelet-client", "node-0")}
    assert "does not match its key" in actions_by(result.actions)[("kubelet-client", "node-0")].reason
    assert parses.count == 3 + 1, "only the changed leaf is parsed"
    assert vouches(store)["nodes/node-0/kubelet-client"].crt == digest(
        (store / "nodes/node-0/kubelet-client.crt").read_bytes())
    assert check_store(ha, store).ok


def test_a_key_swapped_for_another_valid_key_is_caught(ha, store):
    shutil.copy(store / "nodes/node-1/kubelet-serving.key", store / "nodes/node-0/kubelet-serving.key")
    result = reconcile(ha, store)
    assert reissued(result) == {("kubelet-serving", "node-0")}
    assert "does not match its key" in actions_by(result.actions)[("kubelet-serving", "node-0")].reason
    assert check_store(ha, store).ok


def test_a_rewritten_but_identical_file_stays_kept(ha, store, monkeypatch):
    p = store / "admin.crt"
    p.write_bytes(p.read_bytes())  # new mtime, same bytes: the record holds digests, not times
    parses = Parses(monkeypatch)
    assert {a.action for a in reconcile(ha, store).actions} == {"keep"}
    assert parses.count == 3


def test_the_record_never_vouches_for_another_node_s_files(ha, store):
    # node-1's vouch copied over node-0's, with node-1's files: the digests match, the desired state does not
    data = json.loads((store / RECORD).read_text())
    data["leaves"]["nodes/node-0/kubelet-serving"] = data["leaves"]["nodes/node-1/kubelet-serving"]
    (store / RECORD).write_text(json.dumps(data))
    for suffix in (".crt", ".key"):
        shutil.copy(store / f"nodes/node-1/kubelet-serving{suffix}", store / f"nodes/node-0/kubelet-serving{suffix}")
    result = reconcile(ha, store)
    assert reissued(result) == {("kubelet-serving", "node-0")}
    assert "SAN list changed" in actions_by(result.actions)[("kubelet-serving", "node-0")].reason


# --- a changed spec input, another CA, the clock -----------------------------------------------------

def test_a_changed_san_reissues_exactly_that_leaf(ha, store):
    moved = cluster_of("ha", edit=lambda d: d["nodes"][4].update(address="10.240.0.99"))  # node-0
    assert str(moved.node("node-0").address) == "10.240.0.99"
    result = reconcile(moved, store)
    assert reissued(result) == {("kubelet-serving", "node-0")}
    assert "+IP:10.240.0.99" in actions_by(result.actions)[("kubelet-serving", "node-0")].reason


def test_a_changed_subject_or_usage_in_the_catalog_reissues_that_entry(ha, store):
    catalog = default_catalog()
    leaves = tuple(replace(leaf, organizations=("hardway:auditors",)) if leaf.name == "admin"
                   else replace(leaf, usages=frozenset({"clientAuth", "serverAuth"}), sans=("localhost",))
                   if leaf.name == "kube-scheduler" else leaf for leaf in catalog.leaves)
    edited = replace(catalog, leaves=leaves)
    result = reconcile(ha, store, catalog=edited)
    assert reissued(result) == {("admin", None), ("kube-scheduler", None)}
    assert "subject is" in actions_by(result.actions)[("admin", None)].reason
    assert "usages are clientAuth" in actions_by(result.actions)[("kube-scheduler", None)].reason
    assert {a.action for a in reconcile(ha, store, catalog=edited).actions} == {"keep"}
    assert reissued(reconcile(ha, store)) == {("admin", None), ("kube-scheduler", None)}, "and back"


def test_a_changed_key_algorithm_rekeys_every_leaf(ha, store):
    p384 = cluster_of("ha", keyAlgorithm="ECDSA-P384")
    result = reconcile(p384, store)
    assert len(reissued(result)) == LEAVES
    assert all("key is ECDSA-P256, the spec asks for ECDSA-P384" in a.reason for a in result.actions
               if a.action == "reissue")
    assert {a.action for a in reconcile(p384, store).actions} == {"keep"}


def test_a_changed_service_ip_reissues_the_apiserver_certificates(ha, store):
    other = cluster_of("ha", edit=lambda d: d.setdefault("network", {}).update(serviceCIDR="10.33.0.0/24"))
    result = reconcile(other, store)
    assert reissued(result) == {("kube-apiserver", f"controller-{i}") for i in range(3)}


def test_a_changed_cert_validity_applies_from_the_next_issue_with_or_without_the_record(ha, store):
    # docs/pki.md: certValidity is not part of what a leaf must say, so neither check re-issues for it
    shorter = cluster_of("ha", certValidity="90d")
    assert {a.action for a in reconcile(shorter, store).actions} == {"keep"}
    (store / RECORD).unlink()
    assert {a.action for a in reconcile(shorter, store).actions} == {"keep"}
    renew(shorter, store, entry="admin")
    cert = x509.load_pem_x509_certificate((store / "admin.crt").read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=90, minutes=5)


def test_another_ca_reissues_everything_it_signed(ha, store, tmp_path):
    # the front-proxy CA moved away and another imported: the record's CA digest no longer matches
    key = issue.generate_key("ECDSA-P256")
    ca = issue.make_ca("front-proxy-ca", key, timedelta(days=3650))
    (tmp_path / "fp.crt").write_bytes(issue.cert_pem(ca))
    (tmp_path / "fp.key").write_bytes(issue.private_pem(key))
    for name in ("front-proxy-ca.crt", "front-proxy-ca.key"):
        (store / name).rename(tmp_path / f"old-{name}")
    from hardway.pki import parse_import
    result = reconcile(ha, store, import_ca=[parse_import(f"front-proxy-ca={tmp_path}/fp.crt,{tmp_path}/fp.key")])
    assert reissued(result) == {("front-proxy-client", None)}
    assert "not signed by the current front-proxy-ca CA" in actions_by(result.actions)[("front-proxy-client", None)].reason
    assert vouches(store)["front-proxy-client"].ca == digest((store / "front-proxy-ca.crt").read_bytes())
    assert check_store(ha, store).ok


def test_a_record_naming_another_ca_gets_the_full_check(ha, store, monkeypatch):
    data = json.loads((store / RECORD).read_text())
    for v in data["leaves"].values():
        v[3] = "0" * 64
    (store / RECORD).write_text(json.dumps(data))
    parses = Parses(monkeypatch)
    assert {a.action for a in reconcile(ha, store).actions} == {"keep"}  # they are the CA's: full check says so
    assert parses.count == 3 + LEAVES


def test_expiry_is_checked_by_time_on_every_run(ha, store):
    later = issue.now() + timedelta(days=400)  # past certValidity (1y), within the CAs' 10y
    assert len([a for a in plan_actions(ha, store, at=later) if a.action == "reissue"]) == LEAVES
    result = reconcile(ha, store, at=later)
    assert len(reissued(result)) == LEAVES and all("expired" in a.reason for a in result.actions if a.action == "reissue")


def test_not_yet_valid_is_checked_by_time_too(ha, store):
    earlier = issue.now() - timedelta(days=1)
    result = reconcile(ha, store, at=earlier)
    assert len(reissued(result)) == LEAVES
    assert all("not valid before" in a.reason for a in result.actions if a.action == "reissue")


def test_a_record_that_lies_about_the_expiry_is_not_believed_past_it(ha, store, monkeypatch):
    # a vouch claiming an earlier NotAfter than the certificate's: past it, the full check decides (keep)
    data = json.loads((store / RECORD).read_text())
    data["leaves"]["admin"][5] = int(time.time()) - 60
    (store / RECORD).write_text(json.dumps(data))
    parses = Parses(monkeypatch)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"} and parses.count == 3 + 1
    cert = x509.load_pem_x509_certificate((store / "admin.crt").read_bytes())
    assert vouches(store)["admin"].not_after == int(cert.not_valid_after_utc.timestamp())


# --- who trusts the record -----------------------------------------------------------------------

def forge(store: Path, rel: str) -> None:
    """Rewrite the record so it vouches for the file as it now is (what only someone who can write
    the store can do)."""
    data = json.loads((store / RECORD).read_text())
    data["leaves"][rel][0] = digest((store / f"{rel}.crt").read_bytes())
    (store / RECORD).write_text(json.dumps(data))


def test_check_never_trusts_the_record(ha, store):
    # a certificate of another identity, signed by the right CA, with a record forged to vouch for it
    shutil.copy(store / "kube-scheduler.crt", store / "admin.crt")
    forge(store, "admin")
    assert {a.action for a in plan_actions(ha, store)} == {"keep"}, "the forged record is what pki would see"
    report = check_store(ha, store)
    assert not report.ok
    assert any(p.startswith("admin:") and "does not match its key" in p for p in report.problems)


def test_renew_reissues_and_the_next_run_records_the_new_files(ha, store, monkeypatch):
    old = vouches(store)["nodes/node-2/kubelet-client"]
    renew(ha, store, entry="kubelet-client", node="node-2")
    parses = Parses(monkeypatch)
    assert {a.action for a in reconcile(ha, store).actions} == {"keep"}
    assert parses.count == 3 + 1, "the renewed certificate no longer matches its vouch: full check"
    new = vouches(store)["nodes/node-2/kubelet-client"]
    assert new.crt != old.crt and new.key == old.key


def test_preview_and_plan_use_the_record_and_write_nothing(ha, store, monkeypatch):
    before = (store / RECORD).read_bytes()
    parses = Parses(monkeypatch)
    assert {a.action for a in preview(ha, store).actions} == {"keep"}
    assert {a.action for a in plan_actions(ha, store)} == {"keep"}
    assert parses.count == 2 * 3
    assert (store / RECORD).read_bytes() == before


def test_a_removed_node_leaves_the_record(ha, store):
    fewer = cluster_of("ha", edit=lambda d: d.update(nodes=[n for n in d["nodes"] if n["name"] != "node-2"]))
    reconcile(fewer, store)
    assert not [name for name in vouches(store) if "node-2" in name]
    assert len(vouches(store)) == LEAVES - 2


# --- crash safety -----------------------------------------------------------------------------------

def test_a_run_killed_before_the_record_is_written_leaves_a_record_that_is_merely_stale(ha, store, monkeypatch):
    shutil.copy(store / "kube-scheduler.crt", store / "admin.crt")
    stale = (store / RECORD).read_bytes()
    real = fsutil.os.replace

    def no_record(tmp, path):
        if Path(path).name == RECORD:
            raise KeyboardInterrupt("killed before the record")
        real(tmp, path)

    monkeypatch.setattr(fsutil.os, "replace", no_record)
    with pytest.raises(KeyboardInterrupt):
        reconcile(ha, store)
    monkeypatch.setattr(fsutil.os, "replace", real)
    assert (store / RECORD).read_bytes() == stale, "old or new, never half"
    assert not fsutil.leftover_temp_files(store)
    before = snapshot(store)
    result = reconcile(ha, store)  # the re-issued admin.crt does not match the stale vouch: full check, kept
    assert {a.action for a in result.actions} == {"keep"}
    assert snapshot(store) == before
    assert vouches(store)["admin"].crt == digest((store / "admin.crt").read_bytes())


def test_record_bytes_are_deterministic():
    assert record_bytes({}) == record_bytes({})
    assert read_record(record_bytes({})) == {}
