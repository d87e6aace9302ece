"""The errors a user can cause. Each carries a message meant for the user, never a traceback."""

import stat
from pathlib import Path


class HardwayError(Exception):
    """Base of every expected failure: the task prints the message and exits non-zero."""

    exit_code = 1


class SpecError(HardwayError):
    """The cluster spec is wrong. Holds one line per problem, each naming the field path."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = [_capped(p) for p in problems]
        lines = [f"{source}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


MAX_PROBLEM = 400  # characters of one problem line: a huge bad value is never echoed whole


def _capped(problem: str) -> str:
    return problem if len(problem) <= MAX_PROBLEM else problem[:MAX_PROBLEM] + f"... ({len(problem)} characters, cut)"


def check_directory_path(path, what: str, hint: str = "choose another --out") -> None:
    """A HardwayError when `path` (a directory to use or create) cannot be one: it, or the nearest of
    its ancestors that exists, is not a directory. Called before anything is written."""
    path = Path(path)
    for p in (path, *path.parents):
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or below a file: look further up
            continue
        except OSError as e:  # e.g. EACCES: say so instead of guessing
            raise HardwayError(f"cannot use {path} as {what}: {p}: {e.strerror}; {hint}") from None
        if not stat.S_ISDIR(st.st_mode):
            kind = "a regular file" if stat.S_ISREG(st.st_mode) else "not a directory"
            where = f"{path} is {kind}" if p == path else f"{p}, on its path, is {kind}"
            raise HardwayError(f"cannot use {path} as {what}: {where}, not a directory; {hint}")
        return
