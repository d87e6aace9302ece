"""A real OpenSSH server (Debian's /usr/sbin/sshd) inside a network namespace: what `hardway deploy`
logs into in the tests and in a lab (docs/deploy.md). Host keys and a client key are made here, for
the occasion, so the host keys can be pinned in a spec; nothing of the machine's own ssh is used or
changed (only /run/sshd, sshd's privilege-separation directory, is created when missing).

    keys = client_key(tmp / "client")                     # ssh-keygen -t ed25519
    server = start(tmp / "lb", enter=netns_command("hw1a2b3-lb"), address="10.240.0.10",
                   authorized=[keys.public])
    server.host_keys                                      # ["ssh-ed25519 AAAA...", "ecdsa-sha2-nistp256 AAAA..."]
    server.stop()

Each server runs in the foreground (`sshd -D -e`), logging to <dir>/sshd.log, and `stop` ends it
and every session it started. Its sessions get a home of their own (<dir>/home, through a copy of
/etc/passwd bound over the real one in sshd's own mount namespace), so this machine's dotfiles play
no part in a test. `lab_namespaces(labdir)` names each lab node's network namespace as
soon as `lab.up --network-only` made them, before any unit runs.
"""

from __future__ import annotations

import os
import shlex
import signal
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .netns import LabError

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
HOST_KEY_TYPES = (("ed25519", ()), ("ecdsa", ("-b", "256")))


def find_sshd() -> str:
    if not os.access(SSHD, os.X_OK):
        raise LabError(f"{SSHD} is missing: `apt-get install -y openssh-server openssh-client`")
    if shutil.which("ssh-keygen") is None:
        raise LabError("ssh-keygen is missing: `apt-get install -y openssh-client`")
    return SSHD


@dataclass(frozen=True)
class ClientKey:
    private: Path
    public: str  # the authorized_keys line


def client_key(path: Path, comment: str = "hardway-test") -> ClientKey:
    """A new ed25519 key pair at `path` (and path.pub), no passphrase."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return ClientKey(path, Path(f"{path}.pub").read_text().strip())


def host_keys(directory: Path) -> list[str]:
    """Host keys for one server in `directory` (made once, kept on later calls): the public lines."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for kind, extra in HOST_KEY_TYPES:
        key = directory / f"ssh_host_{kind}_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "", "-f", str(key)], check=True)
        lines.append(" ".join(Path(f"{key}.pub").read_text().split()[:2]))
    return lines


def netns_command(netns: str) -> list[str]:
    """The prefix that runs a program in a named network namespace."""
    return ["ip", "netns", "exec", netns]


def lab_namespaces(labdir: Path) -> dict[str, str]:
    """node -> network namespace of a lab whose network exists (lab.up, or lab.up --network-only)."""
    from .lab import Lab
    lab = Lab.load(labdir)
    if lab.network is None:
        raise LabError(f"the lab in {labdir} has no network yet")
    return {m.node: m.netns for m in lab.network.members}


@dataclass
class Sshd:
    directory: Path
    address: str
    port: int
    host_keys: list[str]
    process: subprocess.Popen | None = None
    sessions_killed: list[int] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """End the server and every session process it started (they outlive the listener otherwise)."""
        if self.process is None:
            return
        family = _descendants(self.process.pid)
        for pid in [self.process.pid] + family:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None


def _passwd_with_home(directory: Path, user: str) -> Path:
    """A copy of /etc/passwd where `user`'s home is an empty directory of this server: bound over
    /etc/passwd for sshd only, so a session runs the user's login shell without this machine's own
    dotfiles (a ~/.bashrc that waits on a lock would stall every login)."""
    home = directory / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == user:
            fields[5] = str(home)
        lines.append(":".join(fields))
    copy = directory / "passwd"
    copy.write_text("\n".join(lines) + "\n")
    copy.chmod(0o644)
    return copy


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start(directory: Path, *, enter: list[str], address: str, authorized: list[str], port: int = 22,
          user: str = "root", die_on: str | None = None, timeout: float = 10.0) -> Sshd:
    """Start sshd in the foreground, listening on address:port inside the namespace `enter` leads
    into, accepting only public-key logins of `user` with the keys in `authorized`.

    `die_on`: a fault for the tests: when a command holding this text arrives, the server and that
    session are killed at once, as if the machine went down in the middle of the run."""
    sshd = find_sshd()
    directory = Path(directory).absolute()
    keys = host_keys(directory)
    (directory / "authorized_keys").write_text("".join(k + "\n" for k in authorized))
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    lines = [
        f"ListenAddress {address}", f"Port {port}",
        *(f"HostKey {directory}/ssh_host_{kind}_key" for kind, _ in HOST_KEY_TYPES),
        "PidFile none", f"AuthorizedKeysFile {directory}/authorized_keys", "StrictModes no",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "PermitRootLogin prohibit-password", f"AllowUsers {user}", "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp", "PrintMotd no",
    ]
    if die_on:
        wrapper = directory / "die-on.sh"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"case \"$SSH_ORIGINAL_COMMAND\" in *{shlex.quote(die_on)}*)\n"
            f"  echo \"$(date +%s) dying on: {die_on}\" >> {shlex.quote(str(directory / 'died'))}\n"
            "  listener=$(cat " + shlex.quote(str(directory / "sshd.pid")) + ")\n"
            "  p=$PPID\n"
            "  while [ \"$p\" -gt 1 ] && [ \"$p\" != \"$listener\" ]; do\n"
            "    next=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2); kill -9 \"$p\"; p=$next\n"
            "  done\n"
            "  kill -9 \"$listener\"; exit 255 ;;\n"
            "esac\n"
            "exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n")
        wrapper.chmod(0o755)
        lines.append(f"ForceCommand {wrapper}")
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    own_home = _passwd_with_home(directory, user)
    log = open(directory / "sshd.log", "ab")
    offset = log.tell()  # a restart appends: wait for this server's own line
    check = subprocess.run([*enter, sshd, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise LabError(f"sshd refuses its configuration {config}: {check.stderr.strip()}")
    # unshare execs (no fork) and so do sh and `ip netns exec`: the PID is sshd's
    proc = subprocess.Popen([*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount --bind "$1" /etc/passwd && shift && exec "$@"', "sh", str(own_home),
                             sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (directory / "sshd.pid").write_text(f"{proc.pid}\n")  # `ip netns exec` execs sshd: the same PID
    server = Sshd(directory, address, port, keys, proc)
    deadline = time.monotonic() + timeout
    while "Server listening on" not in server.log.read_bytes()[offset:].decode(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise LabError(f"sshd did not start on {address}:{port}; the end of {server.log}:\n"
                           + "\n".join(server.log.read_text(errors="replace").splitlines()[-10:]))
        time.sleep(0.05)
    return server
