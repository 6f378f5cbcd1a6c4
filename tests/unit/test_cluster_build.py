"""e2e/cluster/build.py stamps the pinned Kubernetes release into the control-plane binaries.

An unstamped kube-apiserver reports v0.0.0-master on /version, and tools that check the server
version (Helm's kubeVersion, Flagger's own checks) refuse it.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from e2e.cluster import build

STAMPED = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def test_the_stamp_is_the_pinned_kubernetes_module() -> None:
    version = build.kubernetes_version()
    assert version.startswith("v1.35.")
    flags = build.version_ldflags()
    for package in build.VERSION_PACKAGES:
        assert f"-X {package}.gitVersion={version}" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=35" in flags
        assert f"-X {package}.gitTreeState=clean" in flags
        [date] = [f for f in flags if f.startswith(f"-X {package}.buildDate=")]
        assert date.endswith("Z")  # the tag's time, not the build's: the same pins, the same bytes
        assert date != f"-X {package}.buildDate=1970-01-01T00:00:00Z"


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain")
def test_the_stamp_is_part_of_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binaries built before the stamp (or with another one) are rebuilt, not reused."""
    key = build.cache_key()
    monkeypatch.setattr(build, "version_ldflags", lambda: ("-X k8s.io/other.gitVersion=v9",))
    assert build.cache_key() != key


@pytest.mark.parametrize("binary", STAMPED)
def test_the_built_binaries_report_the_pinned_version(binary: str) -> None:
    path = build.BIN_LINK / binary
    if not path.exists():
        pytest.skip("e2e/cluster/build has not built the control plane")
    if path.resolve().parent != build.cache_dir():
        pytest.skip("e2e/cluster/bin is from other pins; make cluster-bin rebuilds it")
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == f"Kubernetes {build.kubernetes_version()}"
