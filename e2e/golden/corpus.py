"""One case of the golden corpus (``reference/golden/<provider-dir>/<case>/``), as files read.

The corpus README defines the layout: ``input.yaml`` (objects in creation order, and header
comments naming the new revision's command and what follows success), ``flagger-args.txt``, the
snapshots ``initialized.yaml`` / ``succeeded.yaml`` / ``failed.yaml`` / ``deleted.yaml``,
``steps/NN.yaml`` and ``events.txt``. Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.localcluster import REPO_ROOT

__all__ = ["CORPUS", "Case", "EventLine", "cases", "load_yaml_documents"]

CORPUS = Path(
    os.environ.get("FLAGGERPY_SHARED_DIR", REPO_ROOT.parent / "shared")) / "reference" / "golden"
"""The corpus folder (``FLAGGERPY_SHARED_DIR`` moves the shared folder, as for the CRDs)."""

Json = dict[str, Any]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NEW_REVISION = re.compile(r"^# new revision \(after phase Initialized\): (kubectl .*?)(?:; .*)?$")
_AFTER_SUCCESS = re.compile(r"^# after phase Succeeded: (kubectl .*?)(?: \(.*)? -> deleted\.yaml$")


@dataclass(frozen=True, slots=True)
class EventLine:
    """One emission of ``events.txt``: ``type<TAB>reason<TAB>message``."""

    type: str
    reason: str
    message: str


def load_yaml_documents(path: Path) -> list[Json]:
    """The non-empty documents of a multi-document YAML file."""
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=_LOADER) if doc]


@dataclass(frozen=True)
class Case:
    """A corpus case: where it is, and what Flagger was given and wrote."""

    provider: str
    """The provider folder (``istio``, ``gatewayapi-v1``, ...)."""
    name: str
    path: Path = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"

    @property
    def namespace(self) -> str:
        """Flagger's namespace for the case; derived names contain it, so the replay reuses it."""
        return f"{self.provider}-{self.name}"[:63]

    @cached_property
    def header(self) -> list[str]:
        lines = []
        for line in (self.path / "input.yaml").read_text().splitlines():
            if not line.startswith("#"):
                break
            lines.append(line)
        return lines

    @cached_property
    def inputs(self) -> list[Json]:
        """Every object created, in creation order (the Namespace first, the Canary last)."""
        return load_yaml_documents(self.path / "input.yaml")

    @cached_property
    def flagger_args(self) -> list[str]:
        """Flagger's command line without the binary name, one ``-flag=value`` per item."""
        text = (self.path / "flagger-args.txt").read_text().replace("\\\n", " ")
        return shlex.split(text.replace("<free port>", "<free-port>"))[1:]

    @cached_property
    def new_revision(self) -> list[str] | None:
        """The kubectl arguments that made the new revision (None: the case has none)."""
        for line in self.header:
            match = _NEW_REVISION.match(line)
            if match:
                return shlex.split(match.group(1))[1:]
        return None

    @cached_property
    def after_success(self) -> list[str] | None:
        """The kubectl arguments run after ``Succeeded`` whose result is ``deleted.yaml``."""
        for line in self.header:
            match = _AFTER_SUCCESS.match(line)
            if match:
                return shlex.split(match.group(1))[1:]
        return None

    @property
    def final_name(self) -> str:
        """``succeeded`` or ``failed`` (rollback cases), ``stuck`` / ``crashed`` where Flagger
        never finished."""
        for name in ("succeeded", "failed", "stuck", "crashed"):
            if (self.path / f"{name}.yaml").exists():
                return name
        raise FileNotFoundError(f"{self.id}: no final snapshot")

    @property
    def final_phase(self) -> str:
        return {"succeeded": "Succeeded", "failed": "Failed"}.get(self.final_name, "")

    @property
    def replayable(self) -> bool:
        """Flagger reached a final phase (the stuck and crashed cases have nothing to reach)."""
        return self.final_phase != "" and self.new_revision is not None

    def snapshot(self, name: str) -> list[Json]:
        """``initialized``, ``succeeded``, ``failed`` or ``deleted``: the namespace's objects
        (a fresh copy each time: callers may change it)."""
        if name not in self._snapshots:
            self._snapshots[name] = load_yaml_documents(self.path / f"{name}.yaml")
        return copy.deepcopy(self._snapshots[name])

    @cached_property
    def _snapshots(self) -> dict[str, list[Json]]:
        return {}

    def has(self, name: str) -> bool:
        return (self.path / f"{name}.yaml").exists()

    @cached_property
    def steps(self) -> list[Json]:
        """``steps/NN.yaml`` in order: ``{step, changed, objects, canary, workloads}``."""
        docs = []
        for path in sorted((self.path / "steps").glob("*.yaml")):
            [doc] = load_yaml_documents(path)
            docs.append(doc)
        return docs

    @cached_property
    def events(self) -> list[EventLine]:
        lines = []
        for line in (self.path / "events.txt").read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            kind, reason, message = line.split("\t", 2)
            lines.append(EventLine(kind, reason, message))
        return lines


def cases(provider: str, *, root: Path = CORPUS) -> list[Case]:
    """The cases of one provider folder, sorted by name (none when the folder is missing)."""
    return list(_cases(provider, root))


@functools.cache
def _cases(provider: str, root: Path) -> tuple[Case, ...]:
    folder = root / provider
    if not folder.is_dir():
        return ()
    return tuple(Case(provider, path.name, path)
                 for path in sorted(folder.iterdir()) if (path / "input.yaml").exists())
