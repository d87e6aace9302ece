"""Read what a rendered systemd unit runs: its ExecStart command line, environment and directories.

The lab starts each unit from the unit file that `install.sh` put in the node's root, not from a
re-typed command, so what runs is what the bundle ships. Only the syntax our units can use is
understood: sections, `Key=value` lines, `#`/`;` comments, `\\` line continuations, shell-like
quoting (shlex) and `$VAR`/`${VAR}` from `Environment=`. Anything else the lab cannot honour
(several ExecStart lines, `%` specifiers) is refused with a message rather than half-run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..errors import HardwayError

# Prefixes systemd allows before an Exec path: ignore failure, argv[0], privileges.
_EXEC_PREFIXES = "-@:+!"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


class UnitError(HardwayError):
    """A unit file the lab cannot run."""


@dataclass(frozen=True)
class ServiceUnit:
    name: str  # the unit file name, e.g. etcd.service
    argv: tuple[str, ...]  # ExecStart, split into words, variables expanded
    environment: dict[str, str] = field(default_factory=dict)
    runtime_directories: tuple[str, ...] = ()  # RuntimeDirectory=: names under /run
    state_directories: tuple[str, ...] = ()  # StateDirectory=: names under /var/lib
    logs_directories: tuple[str, ...] = ()  # LogsDirectory=: names under /var/log
    working_directory: str | None = None
    pre: tuple[tuple[bool, tuple[str, ...]], ...] = ()  # ExecStartPre=: (may fail, argv)
    type: str = "simple"  # Type=: "oneshot" runs to completion (pod-nat), the others keep running

    @property
    def binary(self) -> str:
        """The program's base name (`etcd`, `kube-apiserver`, `haproxy`)."""
        return self.argv[0].rsplit("/", 1)[-1]

    @property
    def directories(self) -> tuple[str, ...]:
        """Absolute paths of the directories systemd would create for this unit."""
        return (tuple(f"/run/{d}" for d in self.runtime_directories)
                + tuple(f"/var/lib/{d}" for d in self.state_directories)
                + tuple(f"/var/log/{d}" for d in self.logs_directories))

    def flags(self) -> dict[str, str | None]:
        """`--name=value` / `--name value` / `--flag` arguments as {name: value or None}.

        Only for Kubernetes-style command lines where every argument is a flag (etcd and the
        kube-* binaries); a value that starts with `-` is never taken for a flag's value.
        """
        return dict(parse_flags(self.argv[1:]))


def parse_flags(args: tuple[str, ...] | list[str]) -> list[tuple[str, str | None]]:
    """Split `--a=1 --b 2 --c` into [(a, 1), (b, 2), (c, None)], in order."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise UnitError(f"unexpected positional argument {arg!r} in a flag-only command line")
        name = arg.lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
            out.append((name, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            out.append((name, args[i + 1]))
            i += 1
        else:
            out.append((name, None))
        i += 1
    return out


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines (a trailing backslash) and drop comments and blanks.

    Returns (first line number, text). As in systemd, a comment line inside a continuation is
    skipped and the continuation goes on.
    """
    out: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue
        if pending is None:
            if not line:
                continue
            start = number
            pending = ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = None
    if pending is not None and pending.strip():
        out.append((start, pending.strip()))
    return out


def parse_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} with repeated keys kept in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, line in logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        if current is None or "=" not in line:
            raise UnitError(f"line {number}: expected `[Section]` or `Key=value`, got {line!r}")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def _assignments(value: str, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for word in shlex.split(value):
        if "=" not in word:
            raise UnitError(f"{where}: Environment= entry {word!r} is not NAME=value")
        k, v = word.split("=", 1)
        env[k] = v
    return env


def _expand(words: list[str], env: dict[str, str], where: str) -> list[str]:
    """systemd's rules: a word that is exactly `$VAR` becomes the value split at whitespace;
    `${VAR}` inside a word is replaced verbatim. `%%` is a literal percent; other `%`
    specifiers are not supported here."""
    out: list[str] = []
    for word in words:
        bare = _BARE_VAR.match(word)
        if bare:
            out.extend(env.get(bare.group(1), "").split())
            continue
        word = _VAR.sub(lambda m: env.get(m.group(1), ""), word)
        if re.search(r"%[^%]", word.replace("%%", "")) or word.replace("%%", "").endswith("%"):
            raise UnitError(f"{where}: systemd specifier in {word!r} is not supported by the lab")
        out.append(word.replace("%%", "%"))
    return out


def parse_unit(text: str, name: str) -> ServiceUnit:
    """The service a unit file describes. Raises UnitError naming the unit when it cannot run it."""
    try:
        sections = parse_sections(text)
    except UnitError as e:
        raise UnitError(f"{name}: {e}") from None
    service = sections.get("Service")
    if service is None:
        raise UnitError(f"{name}: no [Service] section")
    env: dict[str, str] = {}
    exec_lines: list[str] = []
    pre_lines: list[str] = []
    dirs: dict[str, list[str]] = {"RuntimeDirectory": [], "StateDirectory": [], "LogsDirectory": []}
    workdir = None
    kind = "simple"
    for key, value in service:
        if key == "Environment":
            env.update(_assignments(value, name))
        elif key == "ExecStart":
            # An empty assignment resets the list (drop-ins use it); we read one file.
            exec_lines = [] if not value else exec_lines + [value]
        elif key == "ExecStartPre":
            pre_lines = [] if not value else pre_lines + [value]
        elif key in dirs:
            if value:
                dirs[key].extend(value.split())
            else:
                dirs[key].clear()
        elif key == "Type":
            kind = value or "simple"
        elif key == "WorkingDirectory":
            workdir = value.lstrip("-") or None
        elif key == "EnvironmentFile":
            raise UnitError(f"{name}: EnvironmentFile= is not supported by the lab; use Environment=")
    if not exec_lines:
        raise UnitError(f"{name}: no ExecStart= line")
    if len(exec_lines) > 1:
        raise UnitError(f"{name}: {len(exec_lines)} ExecStart= lines; the lab runs services with exactly one")
    argv = _command(exec_lines[0], env, name)
    pre = tuple(("-" in _prefixes(line), tuple(_command(line, env, name))) for line in pre_lines)
    return ServiceUnit(
        name=name,
        argv=tuple(argv),
        environment=env,
        runtime_directories=tuple(dirs["RuntimeDirectory"]),
        state_directories=tuple(dirs["StateDirectory"]),
        logs_directories=tuple(dirs["LogsDirectory"]),
        working_directory=workdir,
        pre=pre,
        type=kind,
    )


def _prefixes(line: str) -> str:
    return line[: len(line) - len(line.lstrip(_EXEC_PREFIXES))]


def _command(line: str, env: dict[str, str], name: str) -> list[str]:
    """One Exec line as argv: prefixes dropped, words split, variables expanded."""
    prefixes = _prefixes(line)
    if "@" in prefixes:
        raise UnitError(f"{name}: Exec line with `@` (a separate argv[0]) is not supported by the lab")
    command = line[len(prefixes):]
    try:
        words = shlex.split(command, posix=True)
    except ValueError as e:
        raise UnitError(f"{name}: cannot split the command line ({e}): {command[:80]!r}") from None
    argv = _expand(words, env, name)
    if not argv or not argv[0].startswith("/"):
        raise UnitError(f"{name}: an Exec line must start with an absolute path, got {command[:60]!r}")
    return argv
