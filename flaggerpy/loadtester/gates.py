"""Manual gates: open or closed per canary, kept in memory, as Flagger's ``GateStorage``.

Flagger keys a canary's gate ``<name>.<namespace>`` and its rollback gate
``rollback.<name>.<namespace>``; an unknown gate is closed, and checking it
records it as closed (Go's ``LoadOrStore``), which here has a use: ``gate
list`` shows the gates a controller is waiting on before anyone opened them.
Gates are lost on restart, as in Flagger (a confirm gate closes again; run
one replica).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["GATE", "ROLLBACK", "Gate", "GateKind", "GateStore", "split_canary"]

GateKind = Literal["gate", "rollback"]
GATE: Final[GateKind] = "gate"
ROLLBACK: Final[GateKind] = "rollback"


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate's state."""

    kind: GateKind
    name: str
    namespace: str
    open: bool

    @property
    def key(self) -> str:
        """Flagger's key: ``name.namespace``, or ``rollback.name.namespace``."""
        canary = f"{self.name}.{self.namespace}"
        return canary if self.kind == GATE else f"rollback.{canary}"

    def to_dict(self) -> dict[str, str | bool]:
        """The JSON form ``GET /gate/list`` answers with."""
        return {"key": self.key, "kind": self.kind, "name": self.name,
                "namespace": self.namespace, "open": self.open}


class GateStore:
    """Gate states in memory; one event loop uses it, so no lock is needed."""

    def __init__(self) -> None:
        self._gates: dict[tuple[GateKind, str, str], bool] = {}

    def open(self, kind: GateKind, *, name: str, namespace: str) -> None:
        """Opens a gate (idempotent)."""
        self._gates[(kind, name, namespace)] = True

    def close(self, kind: GateKind, *, name: str, namespace: str) -> None:
        """Closes a gate (idempotent)."""
        self._gates[(kind, name, namespace)] = False

    def is_open(self, kind: GateKind, *, name: str, namespace: str) -> bool:
        """Whether a gate is open; an unknown gate is recorded as closed."""
        return self._gates.setdefault((kind, name, namespace), False)

    def list(self) -> list[Gate]:
        """Every known gate, sorted by namespace, name, kind."""
        return [
            Gate(kind=kind, name=name, namespace=namespace, open=state)
            for (kind, name, namespace), state in sorted(
                self._gates.items(), key=lambda item: (item[0][2], item[0][1], item[0][0]))
        ]


def split_canary(text: str) -> tuple[str, str]:
    """``"podinfo.test"`` → ``("podinfo", "test")``.

    Splits at the last dot: a namespace never contains one, a canary's name may.
    """
    name, dot, namespace = text.strip().rpartition(".")
    if not dot or not name or not namespace:
        raise ValueError(f"{text!r} is not <name>.<namespace> (for example podinfo.test)")
    return name, namespace
