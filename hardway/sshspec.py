"""The meaning of the spec's optional `ssh:` block (cluster level, and each node's override): how
`hardway deploy` (and the Ansible inventory) reach a node. Pure checks over strings: nothing here
connects, reads a key file or touches the disk.

Nothing secret belongs in the spec: `identity` is the path of a private key file on the workstation,
never the key; `hostKeys` are public host keys (the `type base64` of a known_hosts line), which pin
what the node must present.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from .names import SUBDOMAIN_RULE, host_port, parse_host

DEFAULT_USER = "root"
DEFAULT_PORT = 22
# Host key types a pinned key may have: OpenSSH's current defaults (ed25519, ECDSA) and RSA.
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
USER_RULE = ("a login name: a lowercase letter or '_' first, then lowercase letters, digits, '_', '.' or '-', "
             "at most 32 characters")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
JUMP_RULE = "[user@]host[:port], e.g. admin@bastion.example.com:2222 (an IPv6 host in brackets: [fd00::1]:22)"


@dataclass(frozen=True)
class Jump:
    """A ProxyJump hop: user None means your local login name (deploy reads no ~/.ssh/config)."""
    host: str
    port: int = DEFAULT_PORT
    user: str | None = None

    def __str__(self) -> str:
        return (f"{self.user}@" if self.user else "") + host_port(self.host, self.port)


@dataclass(frozen=True)
class HostKey:
    type: str
    key: str  # base64, as in known_hosts

    def __str__(self) -> str:
        return f"{self.type} {self.key}"


@dataclass(frozen=True)
class SshSettings:
    """One `ssh:` block as validated: None where the block does not say (the default, or the
    cluster's, applies; hardway.deploy.targets resolves them)."""
    host: str | None = None  # node level only
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    jump: Jump | None = None
    host_keys: tuple[HostKey, ...] = ()  # node level only


def parse_user(value: str) -> str:
    if not _USER.fullmatch(value):
        raise ValueError(f"{value!r} is not {USER_RULE}")
    return value


def parse_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (1-65535)")
    return value


def parse_identity(value: str) -> str:
    """The path of a private key file on the workstation; never key material."""
    if "PRIVATE KEY" in value or value.startswith("-----"):
        raise ValueError("this is key material, not a path; never put a key in the spec: give the path of the "
                         "private key file on your workstation, e.g. ~/.ssh/id_ed25519")
    if value.split(" ", 1)[0] in HOST_KEY_TYPES or value.startswith("AAAA"):
        raise ValueError(f"{value[:20]!r}... is a public key, not a path; give the path of the private key file on "
                         "your workstation, e.g. ~/.ssh/id_ed25519")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("a path with a control character (a newline?); give one path, e.g. ~/.ssh/id_ed25519")
    if not (value.startswith("/") or value.startswith("~/")):
        raise ValueError(f"{value!r} is not an absolute path or one under your home (~/...); relative paths would "
                         "depend on where hardway runs: e.g. ~/.ssh/id_ed25519 or /etc/hardway/deploy_key")
    if "/../" in value + "/" or len(value) > 1024:
        raise ValueError(f"{value!r}: give a plain path without '..'")
    return value


def parse_ssh_host(value: str) -> str:
    try:
        return parse_host(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an IP address nor {SUBDOMAIN_RULE}") from None


def parse_jump(value: str) -> Jump:
    """`[user@]host[:port]`, as OpenSSH's ProxyJump (one hop)."""
    bad = f"{value!r} is not {JUMP_RULE}"
    if "," in value:
        raise ValueError(f"{value!r}: one jump host only (ProxyJump chains are not supported); {JUMP_RULE}")
    user = None
    rest = value
    if "@" in value:
        user, rest = value.rsplit("@", 1)
        if not _USER.fullmatch(user):
            raise ValueError(f"{bad}: the user {user!r} is not {USER_RULE}")
    port = DEFAULT_PORT
    if rest.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
        if not m or ":" not in m.group(1):
            raise ValueError(bad)
        host, port_text = m.group(1), m.group(2)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    elif rest.count(":") > 1:
        raise ValueError(f"{bad}: write an IPv6 host in brackets")
    else:
        host, port_text = rest, None
    if port_text is not None:
        if not port_text.isdigit():
            raise ValueError(f"{bad}: the port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{bad}: {port} is not a TCP port (1-65535)")
    try:
        host = parse_host(host)
    except ValueError:
        raise ValueError(f"{bad}: the host {host!r} is neither an IP address nor {SUBDOMAIN_RULE}") from None
    return Jump(host, port, user)


_KEY_RULE = ("a public host key line 'TYPE BASE64' as in known_hosts or /etc/ssh/ssh_host_ed25519_key.pub, "
             "TYPE one of " + ", ".join(HOST_KEY_TYPES))
_ED25519_BLOB = 4 + len("ssh-ed25519") + 4 + 32


def parse_host_key(value: str) -> HostKey:
    """A public host key: its type, and base64 whose first field names the same type (the SSH wire
    format); a trailing comment is dropped."""
    if "PRIVATE KEY" in value:
        raise ValueError("this is a private key; never put a key in the spec: pin the node's public host key "
                         "(the content of /etc/ssh/ssh_host_ed25519_key.pub)")
    words = value.split()
    if len(words) < 2:
        raise ValueError(f"{value[:40]!r} is not {_KEY_RULE}")
    if words[0] not in HOST_KEY_TYPES:
        if words[1] in HOST_KEY_TYPES:
            raise ValueError(f"{words[0]!r} first: write the key without a host name, 'TYPE BASE64' "
                             "(a known_hosts line starts with the host)")
        raise ValueError(f"unknown host key type {words[0]!r}; allowed: {', '.join(HOST_KEY_TYPES)}")
    kind, text = words[0], words[1]
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{kind}: {text[:20]!r}... is not base64") from None
    try:
        (n,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + n].decode("ascii")
    except (struct.error, UnicodeDecodeError):
        inner = None
    if inner != kind:
        raise ValueError(f"{kind}: the key's data does not start with {kind!r} (a truncated or mixed-up key?); "
                         f"copy the whole line of the node's host key .pub file")
    if kind == "ssh-ed25519" and len(blob) != _ED25519_BLOB:
        raise ValueError(f"{kind}: the key's data has {len(blob)} bytes, an ed25519 key has {_ED25519_BLOB} "
                         "(a truncated key?)")
    return HostKey(kind, text)
