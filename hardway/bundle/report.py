"""How the bundle stage speaks in `bundle`, `plan` and `check`: short on a 1000-node cluster.

Values only (lines with rich markup, tables): the task layer prints them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from .archive import ArchiveStatus

if TYPE_CHECKING:  # check and diff are imported by what uses them: `bundle` with nothing to do needs neither
    from rich.table import Table

    from .check import BundleReport
    from .diff import NodeChange

_LIST_UP_TO = 40  # nodes listed one by one; beyond that, counts
# by the values of diff.FileStatus and diff.BundleStatus (StrEnums: their members are these strings)
_FILE_STYLE = {"added": "green", "changed": "yellow", "removed": "red"}
_BUNDLE_STYLE = {"new": "green", "changed": "yellow", "removed": "red", "unreadable": "bold red", "unchanged": "dim"}


def run_lines(run) -> list[str]:
    """What `bundle` says about a BundleRun, line by line (rich markup)."""
    lines = []
    changed = [(n, s) for n, s in run.results if s != ArchiveStatus.UNCHANGED]
    if changed and len(changed) <= _LIST_UP_TO:
        for node, status in changed:
            lines.append(f"  {status:9} {escape(str(run.bundles / (node + '.tar.gz')))}")
    for node in run.removed[:_LIST_UP_TO]:
        lines.append(f"  removed   {escape(str(run.bundles / (node + '.tar.gz')))} (no longer in the spec)")
    for note in getattr(run, "notes", ()):
        lines.append(f"[dim]note:[/] {escape(note)}")
    lines.append(f"bundles: {run.count(ArchiveStatus.CREATED)} created, {run.count(ArchiveStatus.UPDATED)} updated, "
                 f"{run.count(ArchiveStatus.UNCHANGED)} unchanged, {len(run.removed)} removed ({escape(str(run.bundles))})")
    return lines


def plan_lines(changes: list[NodeChange], bundles) -> list[str]:
    """One line per bundle to create, change or remove: what and why, and the files it touches by
    name (the file-by-file reasons stay in the data: `plan --json`)."""
    from .diff import BundleStatus
    lines = []
    shown = 0
    for c in changes:
        if c.status == BundleStatus.UNCHANGED:
            continue
        shown += 1
        if shown == 1:
            lines.append(f"bundles in {escape(str(bundles))}:")
        if shown > _LIST_UP_TO:
            continue
        style = _BUNDLE_STYLE[c.status]
        line = f"  [bold]{escape(c.node)}[/] [{style}]{c.status}[/]" + (f": {escape(c.note)}" if c.note else "")
        if c.files:
            names = [f.path for f in c.files]
            listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            line += f" ({len(names)} file(s): {escape(listed)})"
        lines.append(line)
    if shown > _LIST_UP_TO:
        lines.append(f"[dim]... and {shown - _LIST_UP_TO} more bundles to create, change or remove[/]")
    return lines


def plan_file_lines(change: NodeChange) -> list[str]:
    """The file-by-file detail of one bundle's change (what `plan --json` holds), as lines."""
    return [f"  [{_FILE_STYLE[f.change]}]{f.change:8}[/] {escape(f.path)}: {escape(f.why)}" for f in change.files]


def plan_summary(changes: list[NodeChange]) -> str:
    from .diff import BundleStatus
    count = lambda status: sum(1 for c in changes if c.status == status)  # noqa: E731
    files = sum(len(c.files) for c in changes)
    unreadable = count(BundleStatus.UNREADABLE)
    return (f"bundles: {count(BundleStatus.NEW)} to create, {count(BundleStatus.CHANGED)} to change "
            f"({files} file change(s)), {count(BundleStatus.UNCHANGED)} unchanged, {count(BundleStatus.REMOVED)} to remove"
            + (f", {unreadable} unreadable (to rewrite)" if unreadable else ""))


def check_table(report: BundleReport) -> Table:
    from rich.table import Table
    table = Table("bundle", "files", "status", title=f"bundles {escape(str(report.bundles))}", box=None, title_justify="left")
    rows = report.rows if len(report.rows) <= _LIST_UP_TO else [r for r in report.rows if not r.ok]
    for r in rows:
        status = "[green]ok[/]" if r.ok else f"[bold red]{len(r.problems)} problem(s)[/]"
        table.add_row(escape(r.node), str(r.files), status)
    if len(rows) < len(report.rows):
        table.add_row(f"[dim]{len(report.rows) - len(rows)} more[/]", "", "[green]ok[/]")
    return table


def check_summary(report: BundleReport) -> str:
    bad = sum(1 for r in report.rows if not r.ok)
    return f"bundles: {'ok' if report.ok else f'{len(report.all_problems())} problem(s)'}, " \
           f"{len(report.rows)} checked, {bad} with problems"
