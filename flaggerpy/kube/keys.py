"""Keys that name objects in the work queue, caches and indexes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """A namespaced object's identity: the only thing a reconcile request carries.

    Requests carry keys, not events, so a reconcile always re-reads the
    current object and the work queue can collapse bursts into one entry.
    An empty namespace names a cluster-scoped object.
    """

    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """Reads client-go's ``namespace/name`` (or ``name`` for cluster scope) form."""
        namespace, sep, name = text.partition("/")
        return cls(namespace, name) if sep else cls("", namespace)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name
