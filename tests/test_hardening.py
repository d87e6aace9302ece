"""Issue 10, the rest: an imported CA fit to sign, clean exits (no orphaned key workers, no
traceback on a read-only mount), and errors that name the file the user knows."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hardway import fsutil
from hardway.errors import HardwayError
from hardway.pki import issue, parse_import
from helpers import REPO, session_processes

ENV = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _ca(tmp_path: Path, *, key=None, not_before: timedelta = -timedelta(hours=1),
        not_after: timedelta = timedelta(days=3650)) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = issue.now()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "corp-root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before).not_valid_after(now + not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, issue.hashes.SHA256()))
    c, k = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    c.write_bytes(issue.cert_pem(cert))
    k.write_bytes(issue.private_pem(key))
    return f"ca={c},{k}"


def test_an_imported_ca_that_is_not_valid_yet_is_refused(tmp_path):
    with pytest.raises(HardwayError, match="not valid before"):
        parse_import(_ca(tmp_path, not_before=timedelta(days=2)))


def test_an_imported_rsa_1024_ca_is_refused(tmp_path):
    with pytest.raises(HardwayError, match="RSA-1024"):
        parse_import(_ca(tmp_path, key=rsa.generate_private_key(65537, 1024)))


def test_an_imported_ca_must_outlive_the_leaves_it_signs(tmp_path):
    arg = _ca(tmp_path, not_after=timedelta(days=30))
    with pytest.raises(HardwayError, match="before the certificates it"):
        parse_import(arg, cert_validity=timedelta(days=365))
    parse_import(arg, cert_validity=timedelta(days=7))  # the neighbour: leaves of a week are fine
    r = subprocess.run([sys.executable, "-m", "hardway", "pki", "--spec", str(REPO / "examples/ha.yaml"),
                        "--out", str(tmp_path / "out"), "--import-ca", arg],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "certValidity" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_fit_imported_ca_is_still_accepted(tmp_path):
    parse_import(_ca(tmp_path), cert_validity=timedelta(days=365))
    parse_import(_ca(tmp_path, key=rsa.generate_private_key(65537, 2048)), cert_validity=timedelta(days=365))


# ---------------------------------------------------------------- clean exits -------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_key_workers_die_with_pki(tmp_path, sig):
    """A killed `pki` leaves no forkserver, resource tracker or pool worker behind."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the key pool needs 2 cores")
    spec = tmp_path / "cluster.yaml"
    spec.write_text((REPO / "examples/ha.yaml").read_text().replace("ECDSA-P256", "RSA-4096"))
    proc = subprocess.Popen([sys.executable, "-m", "hardway", "pki", "--spec", str(spec), "--out", str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while len(session_processes(proc.pid)) < 3 and time.monotonic() < deadline:  # the pool is up
        time.sleep(0.05)
    assert len(session_processes(proc.pid)) >= 3, "no key pool started"
    os.kill(proc.pid, sig)
    start = time.monotonic()
    proc.wait(timeout=60)
    while session_processes(proc.pid) and time.monotonic() - start < 15:
        time.sleep(0.1)
    left = session_processes(proc.pid)
    for pid in left:  # do not leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, "processes of the killed run are still alive"
    proc.stderr.read()  # EOF: nobody holds the caller's stderr any more


def test_clean_on_a_read_only_file_system_is_a_message(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a private mount namespace)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    script = (f"mount -t tmpfs tmpfs {mnt} && mkdir -p {mnt}/out/bundles/x && touch {mnt}/out/bundles/x/a "
              f"&& mount -o remount,ro {mnt} && exec {sys.executable} -m hardway clean --out {mnt}/out")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{mnt}/out/bundles" in r.stderr and "Read-only file system" in r.stderr


def test_a_full_disk_names_the_file_not_its_temp(tmp_path, monkeypatch):
    target = tmp_path / "lb.tar.gz"

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "write", full)
    with pytest.raises(OSError) as e:
        fsutil.atomic_write(target, b"x" * 100, 0o600)
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir()), "a temp file was left"
