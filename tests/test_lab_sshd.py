"""hardway.lab.sshd: Debian's real sshd in a network namespace, with host keys and a client key made
for the test; OpenSSH's own client checks the pinned host key and logs in with that key only."""

from __future__ import annotations

import subprocess

import pytest

from hardway.lab import sshd
from sshd_helpers import ssh_nodes

pytestmark = pytest.mark.slow


def _ssh(nodes, address: str, known_hosts, key, command: str = "echo hello from $(cat /proc/sys/kernel/hostname)"):
    return subprocess.run(nodes.inside([
        "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(key),
        "-o", "ConnectTimeout=5", f"root@{address}", command]), capture_output=True, text=True, timeout=30)


def test_sshd_in_a_namespace_with_pinned_keys(tmp_path):
    with ssh_nodes(tmp_path, {"a": "10.240.0.10", "b": "10.240.0.11"}) as nodes:
        a, b = nodes.servers["a"], nodes.servers["b"]
        assert [k.split()[0] for k in a.host_keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
        assert a.host_keys != b.host_keys  # each server its own keys
        known = tmp_path / "known_hosts"
        known.write_text("".join(f"10.240.0.10 {k}\n" for k in a.host_keys))
        ok = _ssh(nodes, "10.240.0.10", known, nodes.key.private)
        assert ok.returncode == 0 and ok.stdout.startswith("hello from"), ok.stderr
        # b's keys are not a's: OpenSSH refuses, as deploy must
        known.write_text("".join(f"10.240.0.11 {k}\n" for k in a.host_keys))
        bad = _ssh(nodes, "10.240.0.11", known, nodes.key.private)
        assert bad.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in bad.stderr, bad.stderr
        # another key is refused: only the authorized one logs in
        other = sshd.client_key(tmp_path / "other" / "id")
        known.write_text("".join(f"10.240.0.10 {k}\n" for k in a.host_keys))
        refused = _ssh(nodes, "10.240.0.10", known, other.private)
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr
        assert "Accepted publickey for root" in a.log.read_text()
        # stop ends the listener and its sessions
        session = subprocess.Popen(nodes.inside([
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}", "-i",
            str(nodes.key.private), "root@10.240.0.10", "sleep 300"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if "Starting session: command" in a.log.read_text().split("Permission denied")[-1] and \
                    a.log.read_text().count("Starting session") >= 2:
                break
            subprocess.run(["sleep", "0.1"])
        a.stop()
        assert session.wait(timeout=15) != 0
        assert not a.alive()


def test_die_on_drops_the_connection_and_the_server(tmp_path):
    with ssh_nodes(tmp_path, {"a": "10.240.0.10"}) as nodes:
        a = nodes.start("a", die_on="install.sh")
        known = tmp_path / "known_hosts"
        known.write_text("".join(f"10.240.0.10 {k}\n" for k in a.host_keys))
        assert _ssh(nodes, "10.240.0.10", known, nodes.key.private, "echo fine").stdout == "fine\n"
        gone = _ssh(nodes, "10.240.0.10", known, nodes.key.private, "echo about to run install.sh; sleep 5")
        assert gone.returncode == 255 and "about to" not in gone.stdout
        a.process.wait(timeout=10)
        again = _ssh(nodes, "10.240.0.10", known, nodes.key.private, "echo fine")
        assert again.returncode == 255 and "Connection refused" in again.stderr, again.stderr
