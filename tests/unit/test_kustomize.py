"""kustomize/: each overlay builds what ``helm install`` of the chart creates for that mesh.

``kubectl kustomize`` (kustomize built into kubectl) builds every overlay, and ``helm template``
renders the chart with the values Flagger's install guide gives for the mesh; the two object sets
must be the same object for object. The few differences that are on purpose are listed in
``ON_PURPOSE`` with their reason. kubectl and helm come from ``e2e/cluster/build``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from flaggerpy.models.canary import Canary

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "kustomize"
BIN = ROOT / "e2e" / "cluster" / "bin"
KUBECTL = BIN / "kubectl"
HELM = BIN / "helm"

pytestmark = pytest.mark.skipif(
    not (KUBECTL.exists() and HELM.exists()), reason="e2e/cluster/build has not built kubectl/helm"
)

Key = tuple[str, str, str | None]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kustomize_generate", KUSTOMIZE / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


generate = _generator()

# Objects only one side has, on purpose: (overlay, kind, name) -> why.
ON_PURPOSE: dict[tuple[str, str, str], str] = {
    (mesh, "Namespace", generate.BASE_NAMESPACE): (
        "helm creates flagger-system with --create-namespace; kubectl apply -k needs the object"
    )
    for mesh, overlay in generate.OVERLAYS.items()
    if overlay.create_namespace
}


def build(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o
             for o in objects}
    assert len(keyed) == len(objects), "two objects with one kind, name and namespace"
    return keyed


def controller_args(objects: dict[Key, dict[str, Any]], namespace: str) -> list[str]:
    deployment = objects["Deployment", "flagger", namespace]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_the_generated_files_match_the_charts() -> None:
    result = subprocess.run(
        [sys.executable, str(KUSTOMIZE / "generate.py"), "--check", "--helm", str(HELM)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_flaggers_overlays_are_all_there() -> None:
    flagger_overlays = {"istio", "linkerd", "kubernetes", "contour", "gloo", "nginx", "traefik",
                        "skipper", "apisix", "kuma", "gatewayapi"}
    assert flagger_overlays <= set(generate.OVERLAYS)
    for mesh in generate.OVERLAYS:
        assert (KUSTOMIZE / mesh / "kustomization.yaml").exists()


@pytest.mark.parametrize("mesh", sorted(generate.OVERLAYS))
def test_an_overlay_builds_what_helm_installs_for_its_mesh(mesh: str) -> None:
    overlay = generate.OVERLAYS[mesh]
    built = by_key(build(KUSTOMIZE / mesh))
    rendered = by_key([
        generate.without_helm_labels(o)
        for o in generate.helm_template(HELM, generate.CONTROLLER_CHART, release="flagger",
                                        namespace=overlay.namespace, values=overlay.values)
    ])
    on_purpose = {(kind, name) for (m, kind, name) in ON_PURPOSE if m == mesh}
    only_built = {(kind, name) for kind, name, _ in set(built) - set(rendered)}
    assert only_built == on_purpose
    assert set(rendered) <= set(built)

    # The args that pick the mesh and the metrics server, spelled out before the whole object.
    args = controller_args(built, overlay.namespace)
    values = dict(v.split("=", 1) for v in overlay.values)
    assert f"-mesh-provider={values['meshProvider']}" in args
    if "metricsServer" in values:
        assert f"-metrics-server={values['metricsServer']}" in args
    if values.get("prometheus.install") == "true":
        assert "-metrics-server=http://flagger-prometheus:9090" in args
        assert ("Deployment", "flagger-prometheus", overlay.namespace) in built

    for key, obj in rendered.items():
        assert built[key] == obj, f"{mesh}: {key} differs from helm's"
    binding = built["ClusterRoleBinding", "flagger", None]
    assert binding["subjects"][0]["namespace"] == overlay.namespace


def test_the_base_is_the_charts_defaults() -> None:
    built = by_key(build(KUSTOMIZE / "base" / "flaggerpy"))
    rendered = by_key([
        generate.without_helm_labels(o)
        for o in generate.helm_template(HELM, generate.CONTROLLER_CHART, release="flagger",
                                        namespace="flagger-system")
    ])
    assert built == rendered
    kinds = {kind for kind, _, _ in built}
    assert {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
            "Deployment", "Service"} <= kinds
    crds = {name for kind, name, _ in built if kind == "CustomResourceDefinition"}
    assert {"canaries.flagger.app", "metrictemplates.flagger.app",
            "alertproviders.flagger.app"} <= crds


def test_the_tester_is_the_loadtester_chart_as_flagger_loadtester() -> None:
    built = by_key(build(KUSTOMIZE / "tester"))
    objects = [generate.without_helm_labels(o)
               for o in generate.helm_template(HELM, generate.LOADTESTER_CHART,
                                               release="flagger-loadtester", namespace="test")]
    for obj in objects:  # the chart leaves metadata.namespace to helm's --namespace
        obj["metadata"].setdefault("namespace", "test")
    rendered = by_key(objects)
    assert built == rendered
    assert ("Service", "flagger-loadtester", "test") in built  # http://flagger-loadtester.test/


def test_podinfo_and_its_example_canary() -> None:
    built = by_key(build(KUSTOMIZE / "podinfo"))
    assert set(built) == {("Deployment", "podinfo", "test"),
                          ("HorizontalPodAutoscaler", "podinfo", "test")}
    canary = Canary.model_validate(yaml.safe_load((KUSTOMIZE / "podinfo" / "canary.yaml")
                                                  .read_text()))
    assert canary.spec.target_ref.name == "podinfo"
    container = built["Deployment", "podinfo", "test"]["spec"]["template"]["spec"]["containers"][0]
    assert canary.spec.service is not None
    assert canary.spec.service.port in {p["containerPort"] for p in container["ports"]}
