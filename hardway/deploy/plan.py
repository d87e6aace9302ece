"""What `hardway deploy` does on each node, and in which order: pure functions over the targets, the
digests of the archives hardway wrote, and what each node reports. No SSH here (remote.py is the edge).

On the node, deploy keeps its own state beside (never inside) what install.sh installs:

    <root>/var/lib/hardway/deploy/installed                  "<sha256> <node> started|installed"
    <root>/var/lib/hardway/deploy/manifests                  "<sha256>" of the workstation manifests applied
    <root>/var/lib/hardway/deploy/bundles/<sha256>/<node>.tar.gz   the archive, verified
    <root>/var/lib/hardway/deploy/bundles/<sha256>/<node>/         its unpacked bundle (install.sh runs from here)

<root> is empty on a real node, or `--remote-root` (a staging directory; the lab's node roots).
"""

from __future__ import annotations

import difflib
import hashlib
import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable

from ..errors import HardwayError
from ..names import first_names
from ..spec import ROLES
from .targets import ORDER, Target, phase

STATE_DIR = "/var/lib/hardway/deploy"
NODE_PLACEHOLDER = "{node}"


class Action(StrEnum):
    SKIP = "up to date"
    START = "start"  # installed by an earlier run without --start; start it now
    INSTALL = "install"  # the node has this exact archive already: unpack and install
    UPLOAD = "upload+install"


class Step(StrEnum):
    """The other words of the end table's action column: where a node stopped before an Action,
    and the API and manifests step."""
    CONNECT = "connect"
    PROBE = "probe"
    NOT_ATTEMPTED = "not attempted"
    READYZ = "wait for /readyz"
    MANIFESTS = "apply (super-admin)"


@dataclass(frozen=True)
class NodeState:
    """What a node reports (`probe_command`): the bundle it last installed, and whether this exact
    archive is already in its per-bundle directory."""
    installed: str | None = None  # sha256 of the last bundle install.sh installed without error
    started: bool = False  # that install ran with --start
    has_archive: bool = False  # <state>/bundles/<sha>/<node>.tar.gz is there with that sha256


def decide(digest: str, state: NodeState, start: bool) -> Action:
    """The one action a node needs so that it runs (or, without --start, holds) the bundle `digest`."""
    if state.installed == digest and (state.started or not start):
        return Action.SKIP
    if state.installed == digest:
        return Action.START if state.has_archive else Action.UPLOAD
    return Action.INSTALL if state.has_archive else Action.UPLOAD


def parse_probe(output: str, digest: str) -> NodeState:
    """`probe_command`'s output: line 1 the installed record (or `none`), line 2 the archive's
    sha256sum line (or `absent`)."""
    lines = (output.strip().splitlines() + ["", ""])[:2]
    words = lines[0].split()
    installed = words[0] if len(words) == 3 and len(words[0]) == 64 else None
    started = installed is not None and words[2] == "started"
    has_archive = lines[1].split()[:1] == [digest]
    return NodeState(installed, started, has_archive)


# ---------------------------------------------------------------- selection and order -----------

def select(targets: Iterable[Target], only: list[str] | None = None, role: str | None = None) -> list[Target]:
    """The targets `--only` and `--role` pick (both: a node must match both), in spec order."""
    targets = list(targets)
    names = [t.node for t in targets]
    if role is not None and role not in ROLES:
        close = difflib.get_close_matches(role, ROLES, n=1)
        raise HardwayError(f"--role {role}: no such role; the roles are {', '.join(ROLES)}"
                           + (f"; did you mean {close[0]}?" if close else ""))
    for name in only or []:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise HardwayError(f"--only {name}: no such node in the spec"
                               + (f"; did you mean {close[0]}?" if close else
                                  f"; the nodes are {first_names(names, 10, more=', ...')}"))
    picked = [t for t in targets if (not only or t.node in only) and (role is None or role in t.roles)]
    if not picked:
        raise HardwayError(f"no node is both in --only {' '.join(only or [])} and of role {role}")
    return picked


def phases(targets: list[Target]) -> list[tuple[str, list[Target]]]:
    """The bring-up order: load balancers, controllers (also controller+worker nodes), workers."""
    return [(p, [t for t in targets if phase(t.roles) == p]) for p in ORDER if any(phase(t.roles) == p for t in targets)]


# ---------------------------------------------------------------- the node side -----------------

def parse_remote_root(value: str | None) -> str | None:
    """--remote-root: an absolute directory on the node, `{node}` standing for the node's name."""
    if value is None:
        return None
    rest = value.replace(NODE_PLACEHOLDER, "")
    if not value.startswith("/") or "{" in rest or "}" in rest or "/../" in value + "/" or "\n" in value:
        raise HardwayError(f"--remote-root {value!r}: give an absolute directory on the node, where {NODE_PLACEHOLDER} "
                           "stands for the node's name, e.g. /srv/staging/{node}/root")
    return value.rstrip("/") or None


def node_root(remote_root: str | None, node: str) -> str:
    """The root install.sh installs under on this node ('' for /)."""
    return remote_root.replace(NODE_PLACEHOLDER, node) if remote_root else ""


def state_dir(remote_root: str | None, node: str) -> str:
    return node_root(remote_root, node) + STATE_DIR


def _prelude(state: str, digest: str, node: str) -> str:
    return f"S={shlex.quote(state)}; D={shlex.quote(digest)}; N={shlex.quote(node)}; "


def probe_command(state: str, digest: str, node: str) -> str:
    return _prelude(state, digest, node) + (
        'cat "$S/installed" 2>/dev/null || echo none; '
        'if [ -f "$S/bundles/$D/$N.tar.gz" ]; then sha256sum "$S/bundles/$D/$N.tar.gz"; else echo absent; fi')


def upload_command(state: str, digest: str, node: str) -> str:
    """Reads the archive on stdin into a temporary name in its per-bundle directory."""
    return _prelude(state, digest, node) + (
        'mkdir -p "${S%/*}" && umask 077 && mkdir -p "$S/bundles/$D" && cat > "$S/bundles/$D/$N.tar.gz.part"')


def verify_command(state: str, digest: str, node: str) -> str:
    """The uploaded bytes' sha256, computed on the node, against the archive hardway wrote; kept
    under its final name only when they match."""
    return _prelude(state, digest, node) + (
        'cd "$S/bundles/$D" && if echo "$D  $N.tar.gz.part" | sha256sum -c --strict --quiet - >/dev/null 2>&1; '
        'then mv -f "$N.tar.gz.part" "$N.tar.gz"; '
        'else echo "sha256 of the uploaded archive on the node: $(sha256sum < "$N.tar.gz.part" | cut -d" " -f1)" >&2; '
        'rm -f "$N.tar.gz.part"; exit 3; fi')


DIGEST_MISMATCH = 3  # verify_command's and install_command's exit status when the node's bytes differ


def install_command(state: str, digest: str, node: str, root: str, start: bool) -> str:
    """Check the archive again, unpack it into its own directory, run its install.sh, and record
    the result; then remove the other bundle directories."""
    flags = (f" --root {shlex.quote(root)}" if root else "") + (" --start" if start else "")
    mode = "started" if start else "installed"
    return _prelude(state, digest, node) + (
        'set -e; umask 077; cd "$S/bundles/$D"; '
        'echo "$D  $N.tar.gz" | sha256sum -c --strict --quiet - >/dev/null 2>&1 || '
        '{ echo "deploy: $S/bundles/$D/$N.tar.gz does not have the sha256 hardway wrote; nothing installed" >&2; exit 3; }; '
        'rm -rf "$N"; tar -xzf "$N.tar.gz" --no-same-owner --no-same-permissions; '
        f'sh "$N/install.sh"{flags}; '
        f'printf "%s %s {mode}\\n" "$D" "$N" > "$S/installed.new"; mv -f "$S/installed.new" "$S/installed"; '
        'for d in "$S"/bundles/*; do [ "$d" = "$S/bundles/$D" ] || rm -rf "$d"; done')


def manifests_read_command(state: str) -> str:
    return f'cat {shlex.quote(state)}/manifests 2>/dev/null || echo none'


def manifests_record_command(state: str, digest: str) -> str:
    return (f'mkdir -p {shlex.quote(state)} && printf "%s\\n" {shlex.quote(digest)} > {shlex.quote(state)}/manifests.new && '
            f'mv -f {shlex.quote(state)}/manifests.new {shlex.quote(state)}/manifests')


def as_user(command: str, user: str) -> str:
    """The command as the login runs it: root runs it with sh; anyone else through `sudo -n` (no
    password prompt: deploy never types one)."""
    quoted = shlex.quote(command)
    return f"sh -c {quoted}" if user == "root" else f"sudo -n sh -c {quoted}"


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifests_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """One digest over the workstation manifests (relative path and bytes, in path order)."""
    h = hashlib.sha256()
    for path, data in sorted(files):
        h.update(path.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


# ---------------------------------------------------------------- results and `plan` ------------

@dataclass
class NodeResult:
    node: str
    action: str  # an Action or a Step
    result: str  # "ok", "skipped", "dry run", "failed: why"
    seconds: float = 0.0
    tail: str = ""  # the end of the node's output, for a failure
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"node": self.node, "action": self.action, "result": self.result, "seconds": round(self.seconds, 1),
                "ok": self.ok, "tail": self.tail}


def touched_by_deploy(changes) -> tuple[list[str], bool]:
    """From `plan`'s bundle changes: the nodes a deploy would install (their archive is new or
    changes), and whether the workstation's manifests change (deploy applies them again). A removed
    node's bundle is no deploy's business: deploy never uninstalls."""
    from ..bundle.diff import BundleStatus
    from ..plan import WORKSTATION
    nodes = [c.node for c in changes if c.node != WORKSTATION and c.status in
             (BundleStatus.NEW, BundleStatus.CHANGED, BundleStatus.UNREADABLE)]
    ws = next((c for c in changes if c.node == WORKSTATION), None)
    manifests = ws is not None and (ws.status == BundleStatus.NEW or any("manifests/" in f.path for f in ws.files))
    return nodes, manifests


def deploy_line(changes) -> str:
    nodes, manifests = touched_by_deploy(changes)
    if not nodes and not manifests:
        return "deploy: would touch no node (every bundle unchanged)"
    named = first_names(nodes, 20)
    return (f"deploy: would touch {len(nodes)} node(s)" + (f": {named}" if nodes else "")
            + ("; and apply the workstation manifests again" if manifests else "")
            + " (after `hardway bundle`)")
