"""charts/flaggerpy's kubeVersion: Helm refuses clusters older than 1.21 and admits the rest.

e2e/cluster stamps its API server with the pinned release (e2e/cluster/build.py), so the local
control plane reports v1.35.x and ``helm install`` against it honours the constraint too
(tests/integration/test_chart.py installs the chart there).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flaggerpy"
HELM = ROOT / "e2e" / "cluster" / "bin" / "helm"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="e2e/cluster/build has not built helm")


def template(kube_version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), "template", "flagger", str(CHART), "--kube-version", kube_version],
        capture_output=True, text=True, check=False, timeout=60,
    )


def test_the_chart_declares_the_oldest_kubernetes_it_supports() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.21.0-0"


@pytest.mark.parametrize("version", ["1.20.15", "v1.19.0"])
def test_helm_refuses_an_older_cluster(version: str) -> None:
    result = template(version)
    assert result.returncode != 0
    assert "chart requires kubeVersion: >=1.21.0-0" in result.stderr, result.stderr


@pytest.mark.parametrize("version", ["1.21.0", "v1.30.2-eks-1a2b3c", "v1.35.4"])
def test_helm_admits_supported_clusters_and_provider_builds(version: str) -> None:
    result = template(version)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
