"""The words of the PKI stage as types: what a run does with each store item, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActionKind(StrEnum):
    CREATE = "create"
    KEEP = "keep"
    REISSUE = "reissue"
    ERROR = "error"


CREATE, KEEP, REISSUE, ERROR = ActionKind


@dataclass(frozen=True)
class Action:
    """What a run does (or would do) with one store item, and why."""

    entry: str  # catalog entry, CA name, "service-account", "encryption" or "state"
    node: str | None
    action: ActionKind
    reason: str

    def to_dict(self) -> dict:
        return {"entry": self.entry, "node": self.node, "action": self.action, "reason": self.reason}
