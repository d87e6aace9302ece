"""How the PKI stage speaks: the action table of `pki`/`plan`/`renew` and the table of `check`.

Rows with the same action, entry and reason are grouped (a 1000-worker cluster has 2000 kubelet
rows that say the same thing), and kept rows collapse into a count once there are many.
"""

from __future__ import annotations

from collections import defaultdict

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .check import FAILED, OK, WARNING, CheckReport
from .actions import CREATE, ERROR, KEEP, REISSUE, Action, ActionKind

_STYLE = {CREATE: "green", KEEP: "dim", REISSUE: "yellow", ERROR: "bold red"}
_STATUS_STYLE = {OK: "green", WARNING: "yellow", FAILED: "bold red"}
_SHOW_KEPT_UP_TO = 40


def _nodes_text(nodes: list[str | None]) -> str:
    named = [n for n in nodes if n]
    if not named:
        return ""
    if len(named) <= 3:
        return ", ".join(named)
    return f"{len(named)} nodes ({named[0]} ... {named[-1]})"


def group_actions(actions: list[Action], show_kept: bool | None = None) -> list[tuple[str, str, str, str]]:
    """(action, entry, nodes, reason) rows, grouped; kept rows only when few (or show_kept)."""
    if show_kept is None:
        show_kept = len(actions) <= _SHOW_KEPT_UP_TO
    groups: dict[tuple[str, str, str], list[str | None]] = defaultdict(list)
    for a in actions:
        if a.action == KEEP and not show_kept:
            continue
        groups[(a.action, a.entry, a.reason)].append(a.node)
    return [(action, entry, _nodes_text(nodes), reason) for (action, entry, reason), nodes in groups.items()]


def counts(actions: list[Action]) -> dict[ActionKind, int]:
    found = dict.fromkeys(ActionKind, 0)
    for a in actions:
        found[a.action] += 1
    return found


def summary_line(actions: list[Action], verbs=("created", "kept", "re-issued")) -> str:
    c = counts(actions)
    text = f"{c[CREATE]} {verbs[0]}, {c[KEEP]} {verbs[1]}, {c[REISSUE]} {verbs[2]}"
    return text + (f", {c[ERROR]} in error" if c[ERROR] else "")


def actions_table(actions: list[Action], title: str | None = None, show_kept: bool | None = None) -> Table:
    table = Table("action", "entry", "node", title=escape(title) if title else None, box=None, title_justify="left")
    table.add_column("reason", overflow="fold")  # folded when too long, never cut short with an ellipsis
    for action, entry, nodes, reason in group_actions(actions, show_kept):
        style = _STYLE[action]
        table.add_row(f"[{style}]{action}[/]", escape(entry), escape(nodes), escape(reason))
    hidden = sum(1 for a in actions if a.action == KEEP)
    if show_kept is False or (show_kept is None and len(actions) > _SHOW_KEPT_UP_TO):
        if hidden:
            table.add_row(f"[{_STYLE[KEEP]}]keep[/]", f"[dim]{hidden} more[/]", "", "[dim]valid and matching the spec[/]")
    return table


def check_table(report: CheckReport) -> Text:
    """Aligned columns like `kubeadm certs check-expiration`, never wrapped (pipes are 80 columns)."""
    head = ("CERTIFICATE", "NODE", "SIGNER", "EXPIRES (UTC)", "RESIDUAL", "STATUS")
    rows = [(r.certificate, r.node or "", r.signer, f"{r.expires:%Y-%m-%d %H:%M}" if r.expires else "-",
             r.to_dict()["residual"], r.status) for r in report.rows]
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    text = Text(f"PKI store {report.store}\n", style="bold")
    text.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip() + "\n", style="dim")
    for row in rows:
        text.append("  ".join(str(v).ljust(w) for v, w in zip(row[:-1], widths)) + "  ")
        text.append(row[-1] + "\n", style=_STATUS_STYLE[row[-1]])
    text.rstrip()
    return text
