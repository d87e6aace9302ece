"""What must never happen to a PKI store by accident, and the explicit ways to do it on purpose:

- a CA that is not the recorded one (state.json) is refused, even a valid one; `--import-ca` adopts it;
  two CAs with one key are refused; a store without a record records what it holds (trust on first use);
- a missing service-account pair or encryption key in a store in use is an error; `--new-secret` makes one;
- a changed encryption provider keeps the old key to read (new provider first, old second, identity
  last) until `--retire-old-encryption`;
- a filesystem problem is a clear message, never a traceback; output in a pipe is not cut at 80 columns.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from invoke import Exit

from hardway import spec
from hardway.errors import HardwayError
from hardway.pki import (check_store, issue, load_materials, parse_import, plan_actions, plan_report, preview,
                         reconcile)
from hardway import fsutil
from hardway.pki import store as store_module
from hardway.render import node_plan
from helpers import REPO

REENCRYPT_NOTE = ("encryption provider changed: secrets written before stay readable via the old provider; "
                  "re-encrypt with `kubectl get secrets -A -o json | kubectl replace -f -`, then run "
                  "`hardway pki --retire-old-encryption`")


def cluster_of(example: str = "ha", provider: str | None = None) -> spec.Cluster:
    data = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    data.setdefault("pki", {})["keyAlgorithm"] = "ECDSA-P256"
    if provider:
        data.setdefault("encryption", {})["provider"] = provider
    return spec.loads(yaml.safe_dump(data), source=f"{example}.yaml")


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def spki_sha256(cert_file: Path) -> str:
    cert = issue.load_cert(cert_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def state_of(root: Path) -> dict:
    import json
    return json.loads((root / "state.json").read_text())


def by(actions) -> dict:
    return {(a.entry, a.node): a for a in actions}


@pytest.fixture
def ha():
    return cluster_of("ha", provider="secretbox")


@pytest.fixture
def store(tmp_path, ha) -> Path:
    root = tmp_path / "out" / "pki"
    reconcile(ha, root)
    return root


def refused(cluster, root: Path, *words: str, store_ok: bool = False, **kwargs) -> str:
    """reconcile must stop with every word in its message and write nothing; plan and check agree
    (unless the store itself is fine, and only what was asked for is refused)."""
    before = snapshot(root)
    with pytest.raises(HardwayError) as e:
        reconcile(cluster, root, **kwargs)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert snapshot(root) == before, "nothing written"
    assert any(a.action == "error" for a in plan_actions(cluster, root)) is not store_ok
    assert check_store(cluster, root).ok is store_ok
    return str(e.value)


# --- 1. CA identity ---------------------------------------------------------------------------------

def test_the_store_records_each_cas_public_key_fingerprint(ha, store):
    state = state_of(store)
    assert state["authorities"] == {name: spki_sha256(store / f"{name}.crt")
                                    for name in ("ca", "etcd-ca", "front-proxy-ca")}
    assert stat.S_IMODE((store / "state.json").stat().st_mode) == 0o644
    openssl = shutil.which("openssl")
    if openssl:  # the fingerprint docs/pki.md tells users to compare with
        pub = subprocess.run([openssl, "x509", "-in", str(store / "ca.crt"), "-noout", "-pubkey"], check=True,
                             capture_output=True).stdout
        der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                             capture_output=True).stdout
        assert state["authorities"]["ca"] == "sha256:" + hashlib.sha256(der).hexdigest()
    before = snapshot(store)
    reconcile(ha, store)
    assert snapshot(store) == before, "an unchanged store is not rewritten, state.json included"


def test_another_cas_files_copied_over_a_ca_are_refused(ha, store):
    recorded, found = spki_sha256(store / "ca.crt"), spki_sha256(store / "etcd-ca.crt")
    shutil.copy(store / "etcd-ca.crt", store / "ca.crt")
    shutil.copy(store / "etcd-ca.key", store / "ca.key")
    message = refused(ha, store, "ca.crt", recorded, found, "--import-ca ca=")
    assert "re-issued" in message


def test_a_valid_foreign_ca_is_refused_until_imported_on_purpose(ha, store, tmp_path):
    recorded = spki_sha256(store / "ca.crt")
    key = issue.generate_key("ECDSA-P256")
    (store / "ca.crt").write_bytes(issue.cert_pem(issue.make_ca("kubernetes", key, timedelta(days=3650))))
    (store / "ca.key").write_bytes(issue.private_pem(key))
    found = spki_sha256(store / "ca.crt")
    refused(ha, store, recorded, found, f"--import-ca ca={store}/ca.crt,{store}/ca.key")
    # adopting it deliberately: the very files, named on the command line
    result = reconcile(ha, store, import_ca=[parse_import(f"ca={store}/ca.crt,{store}/ca.key")])
    acts = by(result.actions)
    assert acts[("ca", None)].action == "reissue" and recorded in acts[("ca", None)].reason
    assert acts[("admin", None)].action == "reissue" and "not signed by the current ca CA" in acts[("admin", None)].reason
    assert acts[("etcd-peer", "controller-0")].action == "keep", "the other CAs' leaves are untouched"
    assert state_of(store)["authorities"]["ca"] == found
    assert check_store(ha, store).ok
    assert {a.action for a in reconcile(ha, store).actions} == {"keep"}


def test_importing_over_a_moved_away_ca_records_the_new_one(ha, store, tmp_path):
    (store / "etcd-ca.crt").rename(tmp_path / "old.crt")
    (store / "etcd-ca.key").rename(tmp_path / "old.key")
    key = issue.generate_key("ECDSA-P256")
    (tmp_path / "new.crt").write_bytes(issue.cert_pem(issue.make_ca("etcd-ca", key, timedelta(days=3650))))
    (tmp_path / "new.key").write_bytes(issue.private_pem(key))
    result = reconcile(ha, store, import_ca=[parse_import(f"etcd-ca={tmp_path}/new.crt,{tmp_path}/new.key")])
    assert "replaces the recorded" in by(result.actions)[("etcd-ca", None)].reason
    assert state_of(store)["authorities"]["etcd-ca"] == spki_sha256(tmp_path / "new.crt")
    # and an import over a present, different CA is still refused (docs/pki.md, 'Bring your own CA')
    refused(ha, store, "already has a different etcd-ca", store_ok=True,
            import_ca=[parse_import(f"etcd-ca={tmp_path}/old.crt,{tmp_path}/old.key")])


def test_two_cas_sharing_a_key_are_refused(ha, store):
    (store / "state.json").unlink(missing_ok=True)  # even in a store without a record
    shutil.copy(store / "etcd-ca.crt", store / "ca.crt")
    shutil.copy(store / "etcd-ca.key", store / "ca.key")
    refused(ha, store, "ca and etcd-ca share one key", spki_sha256(store / "etcd-ca.crt"))


def test_importing_another_cas_key_is_refused(ha, tmp_path):
    root = tmp_path / "pki"
    reconcile(ha, root)
    shutil.copy(root / "etcd-ca.crt", tmp_path / "e.crt")
    shutil.copy(root / "etcd-ca.key", tmp_path / "e.key")
    for name in ("front-proxy-ca.crt", "front-proxy-ca.key"):
        (root / name).unlink()
    refused(ha, root, "share one key", import_ca=[parse_import(f"front-proxy-ca={tmp_path}/e.crt,{tmp_path}/e.key")])


def test_a_store_without_a_record_records_it_on_first_use_and_says_so(ha, store):
    state = (store / "state.json").read_bytes()
    (store / "state.json").unlink(missing_ok=True)
    result = reconcile(ha, store)
    assert {a.action for a in result.actions} == {"keep"}
    [note] = [n for n in result.notes if "trust on first use" in n]
    for name in ("ca", "etcd-ca", "front-proxy-ca"):
        assert f"{name} {spki_sha256(store / f'{name}.crt')}" in note
    assert "encryption.key as the secretbox key key1" in note
    assert (store / "state.json").read_bytes() == state
    assert not [n for n in reconcile(ha, store).notes if "trust" in n], "said once"


def test_a_broken_state_file_stops_the_run(ha, store):
    (store / "state.json").write_text("{not json")
    refused(ha, store, "state.json", "delete it")


def renamed(cluster: spec.Cluster, name: str) -> spec.Cluster:
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data["name"], data.setdefault("pki", {})["keyAlgorithm"] = name, "ECDSA-P256"
    data.setdefault("encryption", {})["provider"] = cluster.encryption_provider
    return spec.loads(yaml.safe_dump(data), source="other.yaml")


def test_the_store_records_its_clusters_name_and_refuses_another(ha, store):
    assert state_of(store)["cluster"] == ha.name
    message = refused(renamed(ha, "another-cluster"), store, repr(ha.name), "'another-cluster'", "--out",
                      "--rename-cluster")
    assert "must not share" in message


def test_rename_cluster_keeps_the_cas_under_the_new_name(ha, store):
    cas = {n: (store / f"{n}.crt").read_bytes() for n in ("ca", "etcd-ca", "front-proxy-ca")}
    other = renamed(ha, "renamed-cluster")
    reconcile(other, store, rename_cluster=True)
    assert state_of(store)["cluster"] == "renamed-cluster"
    assert {n: (store / f"{n}.crt").read_bytes() for n in cas} == cas
    reconcile(other, store)  # from now on the store is the renamed cluster's
    refused(ha, store, "'renamed-cluster'")


def test_a_store_without_a_recorded_name_records_the_specs(ha, store):
    data = state_of(store)
    del data["cluster"]
    (store / "state.json").write_text(__import__("json").dumps(data))
    reconcile(ha, store)
    assert state_of(store)["cluster"] == ha.name


# --- 2. secrets of a store in use -------------------------------------------------------------------

def test_a_missing_service_account_pair_in_a_store_in_use_is_an_error(ha, store):
    (store / "service-account.key").unlink()
    (store / "service-account.pub").unlink()
    refused(ha, store, "service-account.key and service-account.pub are missing", "--new-secret service-account",
            "token")


def test_the_same_in_a_store_from_before_state_json(ha, store):
    (store / "state.json").unlink(missing_ok=True)
    (store / "service-account.key").unlink()
    (store / "service-account.pub").unlink()
    refused(ha, store, "--new-secret service-account")


def test_new_secret_service_account_makes_a_new_pair_on_purpose(ha, store):
    before = snapshot(store)
    (store / "service-account.key").unlink()
    (store / "service-account.pub").unlink()
    result = reconcile(ha, store, new_secrets=["service-account"])
    sa = by(result.actions)[("service-account", None)]
    assert sa.action == "create" and "--new-secret service-account" in sa.reason and "token" in sa.reason
    key = (store / "service-account.key").read_bytes()
    assert (store / "service-account.pub").read_bytes() == issue.public_pem(issue.load_private_key(key))
    # present and valid: replaced too, since it was asked for
    result = reconcile(ha, store, new_secrets=["service-account"])
    assert by(result.actions)[("service-account", None)].action == "reissue"
    assert (store / "service-account.key").read_bytes() != key
    assert (store / "service-account.pub").read_bytes() == issue.public_pem(
        issue.load_private_key((store / "service-account.key").read_bytes()))
    assert {k for k in before if before[k] != snapshot(store).get(k)} == {"service-account.key",
                                                                         "service-account.pub"}
    assert check_store(ha, store).ok


def test_a_missing_encryption_key_in_a_store_in_use_is_an_error(ha, store):
    (store / "encryption.key").unlink()
    refused(ha, store, "encryption.key", "missing from a PKI store in use", "--new-secret encryption")


def test_new_secret_encryption_replaces_a_lost_key_or_rotates_a_present_one(ha, store):
    old = load_materials(ha, store).encryption_key
    (store / "encryption.key").unlink()
    result = reconcile(ha, store, new_secrets=["encryption"])
    assert "key1 is lost" in by(result.actions)[("encryption", None)].reason
    assert [(e["provider"], e["name"]) for e in state_of(store)["encryption"]] == [("secretbox", "key2")]
    m = load_materials(ha, store)
    assert m.encryption_key != old and [k[:2] for k in m.encryption_keys] == [("secretbox", "key2")]
    # present: a rotation, the old key kept to read until retired
    result = reconcile(ha, store, new_secrets=["encryption"])
    assert [k[:2] for k in result.materials.encryption_keys] == [("secretbox", "key3"), ("secretbox", "key2")]
    assert any("encryption key rotated" in n and "--retire-old-encryption" in n for n in result.notes)


def test_a_fresh_store_creates_its_secrets_with_or_without_the_flag(ha, tmp_path):
    result = reconcile(ha, tmp_path / "pki", new_secrets=["service-account", "encryption"])
    assert {a.action for a in result.actions} == {"create"}
    with pytest.raises(HardwayError, match="--new-secret 'tls'"):
        reconcile(ha, tmp_path / "other", new_secrets=["tls"])
    assert not (tmp_path / "other").exists()


# --- 3. encryption provider change --------------------------------------------------------------------

def encryption_config(cluster, materials) -> dict:
    plan = node_plan(cluster, materials, "controller-0")
    return yaml.safe_load(plan.file("/etc/kubernetes/encryption-config.yaml").data)


def test_a_changed_provider_writes_with_a_new_key_and_reads_with_the_old(ha, store):
    old = load_materials(ha, store).encryption_key
    aescbc = cluster_of("ha", provider="aescbc")
    planned = plan_report(aescbc, store)
    assert REENCRYPT_NOTE in planned.notes
    assert by(planned.actions)[("encryption", None)].action == "reissue"
    result = reconcile(aescbc, store)
    assert REENCRYPT_NOTE in result.notes
    reason = by(result.actions)[("encryption", None)].reason
    assert "secretbox → aescbc" in reason, reason
    m = result.materials
    assert [k[:2] for k in m.encryption_keys] == [("aescbc", "key2"), ("secretbox", "key1")]
    assert m.encryption_keys[1][2] == old and m.encryption_key == m.encryption_keys[0][2] != old
    assert state_of(store)["encryption"] == [{"provider": "aescbc", "name": "key2"},
                                             {"provider": "secretbox", "name": "key1"}]
    assert stat.S_IMODE((store / "encryption-key2.key").stat().st_mode) == 0o600
    providers = encryption_config(aescbc, m)["resources"][0]["providers"]
    assert providers == [
        {"aescbc": {"keys": [{"name": "key2", "secret": base64.b64encode(m.encryption_key).decode()}]}},
        {"secretbox": {"keys": [{"name": "key1", "secret": base64.b64encode(old).decode()}]}},
        {"identity": {}},
    ]
    # kept, and said, on every run until retired; check warns
    again = reconcile(aescbc, store)
    assert {a.action for a in again.actions} == {"keep"} and REENCRYPT_NOTE in again.notes
    report = check_store(aescbc, store)
    assert report.ok and any("--retire-old-encryption" in w for w in report.warnings)
    # retired on request: the old key leaves the state, the store and the configuration
    done = reconcile(aescbc, store, retire_old_encryption=True)
    assert "retired the secretbox key key1" in by(done.actions)[("encryption", None)].reason
    assert not (store / "encryption.key").exists()
    assert [k[:2] for k in done.materials.encryption_keys] == [("aescbc", "key2")]
    assert [list(p) for p in encryption_config(aescbc, done.materials)["resources"][0]["providers"]] == \
        [["aescbc"], ["identity"]]
    assert not done.notes or not any("provider changed" in n for n in done.notes)
    assert check_store(aescbc, store).ok


def test_changing_back_before_retiring_makes_the_old_key_write_again(ha, store):
    old = load_materials(ha, store).encryption_key
    reconcile(cluster_of("ha", provider="aesgcm"), store)
    result = reconcile(ha, store)  # back to secretbox
    assert [k[:2] for k in result.materials.encryption_keys] == [("secretbox", "key1"), ("aesgcm", "key2")]
    assert result.materials.encryption_key == old


def test_preview_shows_the_new_configuration_without_writing(ha, store):
    before = snapshot(store)
    result = preview(cluster_of("ha", provider="aescbc"), store)
    assert snapshot(store) == before
    assert [k[:2] for k in result.materials.encryption_keys] == [("aescbc", "key2"), ("secretbox", "key1")]


def test_a_missing_old_key_is_an_error_until_retired(ha, store):
    aescbc = cluster_of("ha", provider="aescbc")
    reconcile(aescbc, store)
    (store / "encryption.key").unlink()
    refused(aescbc, store, "encryption.key", "kept to read", "--retire-old-encryption")
    result = reconcile(aescbc, store, retire_old_encryption=True)
    assert [k[:2] for k in result.materials.encryption_keys] == [("aescbc", "key2")]


GO_CHECK = r'''
// Loads EncryptionConfigurations with kube-apiserver's own code: the first given is the cluster's
// configuration now; data sealed with the second (the configuration before) must read back.
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

func load(path string) value.Transformer {
	cfg, err := encryptionconfig.LoadEncryptionConfig(context.Background(), path, false, "test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid:", err)
		os.Exit(2)
	}
	return cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
}

func main() {
	ctx := context.Background()
	at := value.DefaultContext("/registry/secrets/default/s")
	now, before := load(os.Args[1]), load(os.Args[2])
	sealed, err := before.TransformToStorage(ctx, []byte("written before"), at)
	if err != nil {
		panic(err)
	}
	plain, _, err := now.TransformFromStorage(ctx, sealed, at)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unreadable:", err)
		os.Exit(3)
	}
	fresh, err := now.TransformToStorage(ctx, []byte("new"), at)
	if err != nil {
		panic(err)
	}
	fmt.Printf("read %s\nwrites %s\n", plain, fresh[:len("k8s:enc:aescbc:v1:key2:")])
}
'''


@pytest.mark.slow
def test_kube_apiservers_own_code_reads_old_secrets_after_a_provider_change(ha, store, tmp_path, prerequisite):
    go = shutil.which("go")
    if not go:
        prerequisite("the Go toolchain", "see docs/binaries.md")
    work = tmp_path / "gocheck"
    work.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy(REPO / "tools" / "k8s" / name, work / name)
    (work / "main.go").write_text(GO_CHECK)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOWORK": "off"}
    built = subprocess.run([go, "build", "-o", "check", "."], cwd=work, env=env, capture_output=True, text=True,
                           timeout=900)
    if built.returncode != 0:
        prerequisite(f"k8s.io/apiserver in the Go module cache ({built.stderr.strip()[-300:]})",
                     "python -m hardway.binaries")
    before = work / "before.yaml"
    before.write_bytes(node_plan(ha, load_materials(ha, store), "controller-0")
                       .file("/etc/kubernetes/encryption-config.yaml").data)
    aescbc = cluster_of("ha", provider="aescbc")
    now = work / "now.yaml"
    now.write_bytes(node_plan(aescbc, reconcile(aescbc, store).materials, "controller-0")
                    .file("/etc/kubernetes/encryption-config.yaml").data)
    r = subprocess.run([str(work / "check"), str(now), str(before)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["read written before", "writes k8s:enc:aescbc:v1:key2:"]
    # the configuration of before the change alone cannot read what the new one writes: hence the order
    r = subprocess.run([str(work / "check"), str(before), str(now)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3


# --- 4. filesystem errors ---------------------------------------------------------------------------

def cli(args: list[str], cwd: Path, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "hardway.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("task", ["pki", "units", "bundle", "plan", "renew"])
def test_a_regular_file_as_out_is_a_clear_error(tmp_path, task):
    (tmp_path / "afile").write_text("mine\n")
    r = cli([task, "--spec", str(REPO / "examples" / "kthw.yaml"), "--out", "afile"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "error: cannot use afile as the output directory: afile is a regular file" in r.stderr
    assert (tmp_path / "afile").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_file_on_the_path_of_out_or_in_place_of_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    r = cli(["pki", "--spec", str(REPO / "examples" / "kthw.yaml"), "--out", "afile/sub"], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "afile, on its path, is a regular file" in r.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "pki").write_text("not a store\n")
    r = cli(["units", "--spec", str(REPO / "examples" / "kthw.yaml")], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "out/pki is a regular file" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pki"]


def test_an_os_error_inside_a_stage_becomes_a_clean_message(tmp_path, monkeypatch):
    from hardway.commands import run_pki
    from hardway.tasklib import run as _run
    cluster = cluster_of("kthw")

    def full(fd, mode):  # the first write of the store fails, as on a full disk (no file name in the error)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "fchmod", full)  # inside the one durable-write path
    with pytest.raises(Exit) as e:
        _run(lambda: run_pki(cluster, tmp_path / "out", []))
    assert e.value.code == 1
    assert e.value.message == f"error: cannot write {tmp_path / 'out' / 'pki'}/ca.key: No space left on device"
    monkeypatch.undo()
    assert not store_module.leftover_temp_files(tmp_path / "out" / "pki")

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/a.tmp", None, "/ro/a")  # as os.replace

    with pytest.raises(Exit) as e:
        _run(read_only)
    assert e.value.message == "error: cannot write /ro/a: Read-only file system" and e.value.code == 1
    with pytest.raises(BrokenPipeError):  # left to the console command, which exits quietly
        _run(lambda: (_ for _ in ()).throw(BrokenPipeError(errno.EPIPE, "Broken pipe")))


# --- 5. output through a pipe ---------------------------------------------------------------------------

def test_long_reasons_are_printed_whole_in_a_pipe(tmp_path):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
                                        | {"pki": {"keyAlgorithm": "ECDSA-P256"}}))
    assert cli(["pki"], tmp_path).returncode == 0
    store = tmp_path / "out" / "pki"
    shutil.copy(store / "super-admin.crt", store / "admin.crt")
    for task in ("plan", "pki"):
        r = cli([task], tmp_path, drop=("COLUMNS", "LINES"))
        assert r.returncode == 0, r.stderr
        assert ("subject is 'CN=super-admin,O=system:masters', want 'CN=admin,O=hardway:cluster-admins'"
                in r.stdout), r.stdout
        assert "…" not in r.stdout


def test_the_provider_change_note_through_the_cli(tmp_path):
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text()) | {"pki": {"keyAlgorithm": "ECDSA-P256"}}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    assert cli(["pki"], tmp_path).returncode == 0
    data["encryption"] = {"provider": "aescbc"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    r = cli(["plan"], tmp_path, drop=("COLUMNS",))
    assert r.returncode == 0 and REENCRYPT_NOTE in r.stdout, r.stdout
    r = cli(["pki"], tmp_path, drop=("COLUMNS",))
    assert r.returncode == 0 and REENCRYPT_NOTE in r.stderr, r.stderr
    r = cli(["pki", "--retire-old-encryption"], tmp_path)
    assert r.returncode == 0 and "retired the secretbox key key1" in r.stdout
    (tmp_path / "out" / "pki" / "service-account.key").unlink()
    (tmp_path / "out" / "pki" / "service-account.pub").unlink()
    r = cli(["pki"], tmp_path)
    assert r.returncode == 1 and "--new-secret service-account" in r.stderr and "Traceback" not in r.stderr
    r = cli(["pki", "--new-secret", "service-account"], tmp_path)
    assert r.returncode == 0 and "new pair on request" in r.stdout, r.stdout + r.stderr
