"""``kubectl apply -k`` of kustomize/ against the local control plane.

Each overlay is applied into the test's namespace through a small wrapping kustomization (the
overlays' own namespaces, istio-system and the like, belong to the meshes, and the cluster is
shared). Every overlay passes a server-side dry run; the kubernetes overlay, the tester and
podinfo are applied for real and their Deployments become Available on kwok's nodes.
tests/unit/test_kustomize.py checks that the overlays are what the chart installs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import yaml

from e2e.cluster.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "kustomize"
OVERLAYS = sorted(
    p.parent.name
    for p in KUSTOMIZE.glob("*/kustomization.yaml")
    if p.parent.name not in {"tester", "podinfo"}
)
# Kinds whose CRDs the local cluster does not install (its upstream set has no linkerd policy).
NOT_SERVED = {"AuthorizationPolicy"}
CRDS = ("alertproviders.flagger.app", "canaries.flagger.app", "metrictemplates.flagger.app")


def wrap(
    folder: Path, target: Path, *, namespace: str, suffix: str = "", drop_crds: bool = False
) -> Path:
    """A kustomization applying ``target`` into ``namespace`` (kustomize needs a relative path)."""
    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, object] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(target, folder)],
    }
    if suffix:
        body["nameSuffix"] = suffix  # cluster-scoped names stay apart from other releases'
    if drop_crds:  # the shared cluster keeps the CRDs the other tests installed
        body["patches"] = [
            {
                "patch": yaml.safe_dump({
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": name},
                    "$patch": "delete",
                })
            }
            for name in CRDS
        ]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_every_overlay_passes_a_server_side_dry_run(
    cluster: LocalCluster, namespace: str, tmp_path: Path, overlay: str
) -> None:
    wrapper = wrap(tmp_path / "wrap", KUSTOMIZE / overlay, namespace=namespace)
    result = await cluster.akubectl(
        "apply", "-k", str(wrapper), "--dry-run=server", check=False
    )
    failures = [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and not line.startswith("Warning:")  # the CRDs already there were not applied with -k
        and not any(f'kind "{kind}"' in line for kind in NOT_SERVED)
        and line != "ensure CRDs are installed first"  # kubectl's hint after that line
    ]
    assert not failures, result.stderr
    assert result.returncode == 0 or "AuthorizationPolicy" in result.stderr, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert any(line.startswith("deployment.apps/flagger ") for line in applied), result.stdout
    assert any("customresourcedefinition" in line for line in applied), result.stdout


async def test_the_kubernetes_overlay_applies_and_its_deployments_become_available(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    suffix = f"-{secrets.token_hex(3)}"
    wrapper = wrap(
        tmp_path / "wrap",
        KUSTOMIZE / "kubernetes",
        namespace=namespace,
        suffix=suffix,
        drop_crds=True,
    )
    try:
        applied = await cluster.akubectl("apply", "-k", str(wrapper))
        assert f"deployment.apps/flagger{suffix} created" in applied.stdout
        assert f"clusterrole.rbac.authorization.k8s.io/flagger{suffix} created" in applied.stdout
        for name in (f"flagger{suffix}", f"flagger-prometheus{suffix}"):
            await cluster.akubectl(
                "-n", namespace, "wait", "--for=condition=Available", "--timeout=180s",
                f"deployment/{name}",
            )
        binding = yaml.safe_load(
            (await cluster.akubectl("get", "clusterrolebinding", f"flagger{suffix}", "-o", "yaml"))
            .stdout
        )
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"flagger{suffix}", "namespace": namespace}
        ]
        # The account the chart's rules are for may do what the controller needs, mesh included.
        can = await cluster.akubectl(
            "auth", "can-i", "patch", "canaries.flagger.app/status",
            f"--as=system:serviceaccount:{namespace}:flagger{suffix}", "-n", "default",
        )
        assert can.stdout.strip() == "yes"
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            for name in (f"flagger{suffix}", f"flagger-prometheus{suffix}"):
                await cluster.akubectl("delete", kind, name, "--ignore-not-found", check=False)


async def test_the_tester_and_podinfo_apply_and_become_available(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    for example in ("tester", "podinfo"):
        wrapper = wrap(tmp_path / example, KUSTOMIZE / example, namespace=namespace)
        await cluster.akubectl("apply", "-k", str(wrapper))
    for name in ("flagger-loadtester", "podinfo"):
        await cluster.akubectl(
            "-n", namespace, "wait", "--for=condition=Available", "--timeout=180s",
            f"deployment/{name}",
        )
    service = yaml.safe_load(
        (await cluster.akubectl("-n", namespace, "get", "service", "flagger-loadtester",
                                "-o", "yaml")).stdout
    )
    assert service["spec"]["ports"][0]["port"] == 80  # http://flagger-loadtester.<ns>/
    hpa = await cluster.akubectl("-n", namespace, "get", "hpa", "podinfo", "-o", "name")
    assert hpa.stdout.strip() == "horizontalpodautoscaler.autoscaling/podinfo"
