"""The SSH edge of `hardway deploy`, on Fabric (and its Paramiko): one Connection per Target, with
strict host keys, and the few commands deploy runs on a node. Imported only when a deploy runs.

Host keys: a node with keys pinned in the spec (nodes[].ssh.hostKeys) is checked against those keys
only; any other node (and a jump host) against the user's known_hosts. An unknown key stops that
host, and so does a changed one, always. `accept_new` (--accept-new) accepts an unknown key once and
adds it to known_hosts, as OpenSSH's StrictHostKeyChecking=accept-new: weaker, since nothing then
proves that first key is the node's.

~/.ssh/config is not read: the spec's ssh blocks (targets.py) say everything deploy uses, so the
same spec reaches the same machines from any workstation.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import fabric  # the optional extra `deploy`: commands.run_deploy says how to install it when missing
import paramiko
from invoke.exceptions import CommandTimedOut

from ..errors import HardwayError
from ..sshspec import Jump
from .targets import Target

# paramiko logs a failed handshake (and its traceback) from its transport thread; the error reaches
# the caller as an exception and is reported in the end table, so the log would only repeat it as noise.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

CONNECT_TIMEOUT = 15


class NodeFailure(HardwayError):
    """One node could not be reached or its step failed: that node stops, the others go on."""

    def __init__(self, message: str, tail: str = ""):
        super().__init__(message)
        self.tail = tail


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256:... as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass
class HostKeyPolicy:
    known_hosts: Path  # the user's, ~/.ssh/known_hosts unless --known-hosts says otherwise
    accept_new: bool = False


_known_hosts_lock = threading.Lock()


class _Missing(paramiko.MissingHostKeyPolicy):
    def __init__(self, policy: HostKeyPolicy, pinned: bool, accepted: list[str]):
        self.policy, self.pinned, self.accepted = policy, pinned, accepted

    def missing_host_key(self, client, hostname, key):
        where = "no key pinned in the spec matches its type" if self.pinned else \
            f"not in {self.policy.known_hosts}"
        if self.pinned or not self.policy.accept_new:
            hint = ("pin the right key in nodes[].ssh.hostKeys" if self.pinned else
                    "check the key on the node's console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then "
                    "pin it in the spec (nodes[].ssh.hostKeys) or add it to known_hosts; --accept-new trusts it "
                    "unchecked (weaker)")
            raise NodeFailure(f"unknown host key for {hostname}: {key.get_name()} {fingerprint(key)} ({where}); "
                              f"nothing done on this node. {hint}")
        with _known_hosts_lock:
            path = self.policy.known_hosts
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.accepted.append(f"{hostname}: accepted new host key {key.get_name()} {fingerprint(key)} "
                             f"(--accept-new), added to {self.policy.known_hosts}")


def _client_setup(conn: fabric.Connection, target_keys, policy: HostKeyPolicy, accepted: list[str]) -> None:
    client = conn.client
    pinned = bool(target_keys)
    if pinned:
        for k in target_keys:
            key = paramiko.PKey.from_type_string(k.type, base64.b64decode(k.key))
            client.get_host_keys().add(_known_name(conn.host, conn.port), k.type, key)
    elif policy.known_hosts.is_file():
        try:
            client.load_host_keys(str(policy.known_hosts))
        except (OSError, paramiko.SSHException) as e:
            raise NodeFailure(f"cannot read {policy.known_hosts}: {e}") from None
    client.set_missing_host_key_policy(_Missing(policy, pinned, accepted))


def _known_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _connect_kwargs(identity: str | None) -> dict:
    if identity is None:  # ssh's own: the agent, then ~/.ssh/id_*
        return {"timeout": CONNECT_TIMEOUT, "banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT}
    path = os.path.expanduser(identity)
    if not os.path.isfile(path):
        raise NodeFailure(f"the identity file {identity} (the spec's ssh.identity) is not a file on this workstation")
    # only that key, as OpenSSH's IdentitiesOnly=yes: a refused key is not hidden by an agent's
    return {"key_filename": path, "look_for_keys": False, "allow_agent": False,
            "timeout": CONNECT_TIMEOUT, "banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT}


def _config() -> fabric.Config:
    return fabric.Config(ssh_config=paramiko.SSHConfig())  # no ~/.ssh/config: the spec says it all


def connect(target: Target, policy: HostKeyPolicy, accepted: list[str]) -> fabric.Connection:
    """An open connection to the target (through its jump host), host keys checked; or NodeFailure
    saying what went wrong: unknown or changed host key, login refused, host unreachable."""
    gateway = _jump(target.jump, target.identity, policy, accepted) if target.jump else None
    conn = fabric.Connection(target.host, user=target.user, port=target.port, config=_config(),
                             connect_kwargs=_connect_kwargs(target.identity), gateway=gateway)
    _client_setup(conn, target.host_keys, policy, accepted)
    _open(conn, target.address, "this node")
    return conn


def _jump(jump: Jump, identity: str | None, policy: HostKeyPolicy, accepted: list[str]) -> fabric.Connection:
    conn = fabric.Connection(jump.host, user=jump.user or os.environ.get("USER") or "root", port=jump.port,
                             config=_config(), connect_kwargs=_connect_kwargs(identity))
    _client_setup(conn, (), policy, accepted)
    return conn


def _open(conn: fabric.Connection, address: str, what: str) -> None:
    try:
        conn.open()
    except NodeFailure:
        raise
    except paramiko.BadHostKeyException as e:
        raise NodeFailure(f"host key CHANGED for {e.hostname}: it presented {e.key.get_name()} {fingerprint(e.key)}, "
                          f"expected {fingerprint(e.expected_key)}; someone may be intercepting the connection, or "
                          f"the machine was reinstalled. Nothing done on {what}: check it, then correct the pinned key "
                          "or known_hosts") from None
    except paramiko.AuthenticationException as e:
        raise NodeFailure(f"login refused for {address}: {e}; check the user and the identity (ssh.user, "
                          "ssh.identity) and the node's authorized_keys") from None
    except (paramiko.SSHException, socket.timeout, TimeoutError) as e:
        raise NodeFailure(f"cannot connect to {address}: {e or type(e).__name__}") from None
    except OSError as e:
        raise NodeFailure(f"cannot connect to {address}: {e.strerror or e}") from None


def run(conn: fabric.Connection, command: str, timeout: float = 600) -> tuple[int, str]:
    """(exit status, stdout+stderr) of a command; -1 when the connection was lost before it ended."""
    try:
        result = conn.run(command, hide=True, warn=True, pty=False, in_stream=False, timeout=timeout)
    except CommandTimedOut as e:
        return -1, f"no answer after {e.timeout}s"
    except (paramiko.SSHException, EOFError, OSError) as e:
        return -1, f"connection lost: {e or type(e).__name__}"
    return result.exited if result.exited is not None else -1, result.stdout + result.stderr


def send(conn: fabric.Connection, command: str, data: bytes, timeout: float = 600) -> tuple[int, str]:
    """Run `command` with exactly `data` on its stdin (Invoke's stdin is for text, an archive is not)."""
    try:
        chan = conn.client.get_transport().open_session(timeout=timeout)
        chan.settimeout(timeout)
        chan.set_combine_stderr(True)
        chan.exec_command(command)
        chan.sendall(data)
        chan.shutdown_write()
        output = b""
        while chunk := chan.recv(65536):
            output += chunk
        status = chan.recv_exit_status()
        chan.close()
        return status, output.decode(errors="replace")
    except (paramiko.SSHException, EOFError, OSError, AttributeError) as e:
        return -1, f"connection lost: {e or type(e).__name__}"


def close(conn: fabric.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001  (a dead connection: nothing left to close)
            pass
