"""The identity the replay's controller runs as: it reads the whole cluster, writes only the cases.

One ``flaggerpy controller`` serves every case of a provider, so it watches all namespaces. On a
cluster shared with other tests it would also reconcile their Canaries; as a ServiceAccount that may
read everywhere but write only in the case namespaces (and, for a provider with cluster-scoped
routing kinds, those kinds), it cannot change anything outside the replay.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube

__all__ = ["ScopedIdentity"]


class ScopedIdentity:
    """A ServiceAccount, its RBAC and a token kubeconfig; ``delete()`` removes them all."""

    def __init__(self, cluster: LocalCluster, *, namespaces: Sequence[str],
                 cluster_writes: Sequence[kube.Resource] = ()) -> None:
        self.cluster = cluster
        self.namespaces = list(namespaces)
        self.cluster_writes = list(cluster_writes)
        self.name = f"flaggerpy-golden-{secrets.token_hex(3)}"
        self.home = self.name  # the ServiceAccount's own namespace

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.home}:{self.name}"

    def _manifests(self) -> list[dict[str, Any]]:
        subject = [{"kind": "ServiceAccount", "name": self.name, "namespace": self.home}]
        cluster_rules: list[dict[str, Any]] = [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
        cluster_rules += [{"apiGroups": [r.group], "resources": [r.plural], "verbs": ["*"]}
                          for r in self.cluster_writes]
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": self.name, "namespace": self.home}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": self.name}, "rules": cluster_rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": self.name}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": self.name}},
        ]
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": self.name, "namespace": namespace}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "cluster-admin"}}
            for namespace in self.namespaces]
        return objects

    async def create(self, directory: Path) -> Path:
        """Creates the identity (the case namespaces must exist) and returns its kubeconfig."""
        await self.cluster.akubectl("create", "namespace", self.home)
        body = {"apiVersion": "v1", "kind": "List", "items": self._manifests()}
        await self.cluster.akubectl("create", "-f", "-", input=json.dumps(body))
        token = await self.cluster.akubectl(
            "create", "token", self.name, "-n", self.home, "--duration=2h")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.cluster.server,
                "certificate-authority": str(self.cluster.pki_dir / "ca.crt")}}],
            "users": [{"name": self.name, "user": {"token": token.stdout.strip()}}],
            "contexts": [{"name": "golden", "context": {"cluster": "local", "user": self.name}}],
            "current-context": "golden",
        }
        path = directory / f"{self.name}.kubeconfig"
        await asyncio.to_thread(_write_private, path, json.dumps(config))
        return path

    async def delete(self) -> None:
        for kind in ("clusterrolebinding", "clusterrole"):
            await self.cluster.akubectl("delete", kind, self.name, "--ignore-not-found",
                                        check=False)
        await self.cluster.akubectl("delete", "namespace", self.home, "--wait=false",
                                    "--ignore-not-found", check=False)


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read: it holds a token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
