"""Builds flaggerpy's container images with podman, on a Debian base made here rather than pulled.

No registry of base images is reachable from the machines this project runs on, and there is no
Docker engine. So the base is a Debian bookworm root filesystem made by ``mmdebstrap`` from
Debian's packages (Python 3.11 from Debian, which the wheel's ``requires-python`` accepts),
imported with ``podman import``, and cached outside the clone keyed by its inputs, like
``e2e/cluster/build.py`` caches the control plane. The Dockerfiles then build on it unchanged
(their base is an ARG). The load tester's tools are Go modules built here (hey, ghz,
grpc_health_probe), the pinned kubectl and helm of the local control plane, and Debian's wrk.

podman runs as ``podman --runtime runc --cgroup-manager=cgroupfs`` with the host network and low
ulimits: crun, systemd cgroups and the default ulimits fail in the sandboxes this runs in.

``python -m e2e.images`` builds (or reuses) both images and prints their sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("FLAGGERPY_CACHE", Path.home() / ".cache" / "flaggerpy"))
IMAGES_CACHE = CACHE_ROOT / "images"
CONTEXT_DIR = ROOT / "build" / "images"

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")
# What `podman run` and the RUN steps of `podman build` need in these sandboxes.
RUN_FLAGS = ("--network=host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

SUITE = "bookworm"
# The runtime base: Python and the CA bundle, nothing more (minbase has no compiler, no shell
# tools beyond coreutils/dash/bash, and apt for the load tester's wrk).
BASE_PACKAGES = ("python3", "ca-certificates")
# The builder adds what makes the venv; the runtime image copies the venv and none of these.
BUILDER_PACKAGES = ("python3-venv", "python3-pip")
# Documentation, manuals and translations are a third of a minimal Debian and no use in an image.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)


@dataclass(frozen=True)
class GoTool:
    """One load-tester tool built from a Go module (``go install module/package@version``)."""

    binary: str
    package: str
    version: str
    built_as: str = ""  # the name ``go install`` gives it, when the image's name differs

    @property
    def installed(self) -> str:
        return self.built_as or self.binary


# The versions the Go module proxy serves here (hey's and ghz's newest tags, grpc-health-probe's
# newest listed in the machine's package notes).
GO_TOOLS = (
    GoTool("hey", "github.com/rakyll/hey", "v0.1.5"),
    GoTool("ghz", "github.com/bojand/ghz/cmd/ghz", "v0.93.0"),
    GoTool("grpc_health_probe", "github.com/grpc-ecosystem/grpc-health-probe", "v0.4.63",
           built_as="grpc-health-probe"),
)
GO_FLAGS = ("-trimpath", "-ldflags=-s -w")
# The Dockerfile's title label: what marks an image as one of flaggerpy's own.
IMAGE_LABEL = "org.opencontainers.image.title=flaggerpy"


@dataclass(frozen=True)
class Images:
    """The references of the images a build produced (tags in podman's local storage)."""

    controller: str
    loadtester: str


def _log(message: str) -> None:
    print(f"[e2e/images] {message}", file=sys.stderr, flush=True)


def _run(args: list[str] | tuple[str, ...], **kwargs: object) -> None:
    _log("$ " + " ".join(args))
    subprocess.run(args, check=True, **kwargs)  # type: ignore[call-overload]


def podman_available() -> bool:
    """podman on PATH and able to talk to its storage (it needs root here)."""
    if shutil.which("podman") is None:
        return False
    probe = subprocess.run([*PODMAN, "info", "--format", "{{.Store.GraphRoot}}"],
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0


def image_exists(reference: str) -> bool:
    result = subprocess.run([*PODMAN, "image", "exists", reference], check=False)
    return result.returncode == 0


def image_size(reference: str) -> int:
    """The image's size in bytes as podman reports it (the sum of its uncompressed layers)."""
    out = subprocess.run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", reference],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def project_version() -> str:
    from flaggerpy import __version__

    return __version__


def base_key() -> str:
    """Hash of every input that decides the base's content, so a changed input rebuilds it."""
    digest = hashlib.sha256()
    for part in (SUITE, *BASE_PACKAGES, "|", *BUILDER_PACKAGES, "|", *DPKG_OPTIONS):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def tools_key() -> str:
    digest = hashlib.sha256()
    for tool in GO_TOOLS:
        digest.update(f"{tool.binary} {tool.package}@{tool.version}\0".encode())
    digest.update(" ".join(GO_FLAGS).encode())
    digest.update(_go_version().encode())
    return digest.hexdigest()[:16]


def _go_version() -> str:
    return subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True,
                          text=True).stdout.strip()


def base_images() -> tuple[str, str]:
    """The runtime and builder base references for the current inputs."""
    key = base_key()
    return f"localhost/flaggerpy-base:{key}", f"localhost/flaggerpy-base-build:{key}"


def ensure_base() -> tuple[str, str]:
    """Make (or reuse) the runtime base and the builder base; returns their references.

    The root filesystem tarball is the slow part (a couple of minutes of mmdebstrap) and is
    cached on disk; podman's storage may be wiped independently, so the import is redone from the
    tarball whenever the tag is missing.
    """
    runtime, builder = base_images()
    cache = IMAGES_CACHE / base_key()
    rootfs = cache / "rootfs.tar"
    if not image_exists(runtime):
        if not rootfs.exists():
            cache.mkdir(parents=True, exist_ok=True)
            partial = rootfs.with_suffix(".partial")
            _run([
                "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                "--include=" + ",".join(BASE_PACKAGES),
                *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
                SUITE, str(partial),
            ])
            partial.rename(rootfs)
        _run([*PODMAN, "import", "--change", 'CMD ["/bin/bash"]', str(rootfs), runtime],
             stdout=subprocess.DEVNULL)
    if not image_exists(builder):
        containerfile = (
            f"FROM {runtime}\n"
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(BUILDER_PACKAGES)} "
            "&& rm -rf /var/lib/apt/lists/*\n"
        )
        _run([*PODMAN, "build", *RUN_FLAGS, "-t", builder, "-f", "-", str(cache)],
             input=containerfile.encode())
    return runtime, builder


def ensure_go_tools() -> Path:
    """Build (or reuse) the load tester's Go tools as static binaries; returns their folder."""
    target = IMAGES_CACHE / f"tools-{tools_key()}"
    if all((target / tool.binary).exists() for tool in GO_TOOLS):
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOBIN=str(partial))
    for tool in GO_TOOLS:
        _run(["go", "install", *GO_FLAGS, f"{tool.package}@{tool.version}"], env=env, cwd="/")
        if tool.installed != tool.binary:  # Flagger's image names it grpc_health_probe
            (partial / tool.installed).rename(partial / tool.binary)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _cluster_binaries() -> Path:
    """kubectl and helm: the pinned ones the local control plane already uses."""
    from e2e.cluster.build import ensure_binaries

    return ensure_binaries()


def _revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def _secret_flags() -> list[str]:
    """The host's CA bundle as the build secret ``cacert`` (see the Dockerfile), when it has one.

    The machines here reach the package index through a TLS-intercepting proxy whose CA only the
    host trusts; a secret keeps the bundle out of every layer.
    """
    bundle = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
    return ["--secret", f"id=cacert,src={bundle}"] if bundle.is_file() else []


def build_images(*, tag: str | None = None) -> Images:
    """Build the controller and load-tester images (podman's layer cache makes a rebuild cheap)."""
    tag = tag or project_version()
    runtime, builder = ensure_base()
    images = Images(controller=f"localhost/flaggerpy:{tag}",
                    loadtester=f"localhost/flaggerpy-loadtester:{tag}")
    revision = _revision()
    _run([
        *PODMAN, "build", *RUN_FLAGS, *_secret_flags(),
        "--build-arg", f"BUILDER_IMAGE={builder}", "--build-arg", f"RUNTIME_IMAGE={runtime}",
        "--build-arg", f"REVISION={revision}",
        "-t", images.controller, "-f", str(ROOT / "Dockerfile"), str(ROOT),
    ])
    context = CONTEXT_DIR / "loadtester"
    shutil.rmtree(context, ignore_errors=True)
    (context / "bin").mkdir(parents=True)
    tools = ensure_go_tools()
    cluster_bin = _cluster_binaries()
    for source in [*(tools / t.binary for t in GO_TOOLS), cluster_bin / "kubectl",
                   cluster_bin / "helm"]:
        shutil.copy2(source.resolve(), context / "bin" / source.name)
    _run([
        *PODMAN, "build", *RUN_FLAGS,
        "--build-arg", f"BASE_IMAGE={images.controller}",
        "-t", images.loadtester, "-f", str(ROOT / "Dockerfile.loadtester"), str(context),
    ])
    # Each rebuild leaves the previous images untagged (half a gigabyte each); the label is the
    # Dockerfile's, so nothing but flaggerpy's own images is pruned.
    _run([*PODMAN, "image", "prune", "--force", "--filter", f"label={IMAGE_LABEL}"],
         stdout=subprocess.DEVNULL)
    return images


def _human(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.images", description=__doc__)
    parser.add_argument("--tag", default=None, help="image tag (default: the project version)")
    parser.add_argument("--json", action="store_true", help="print references and sizes as JSON")
    args = parser.parse_args(argv)
    if not podman_available():
        _log("podman is not installed or cannot run: apt-get install podman runc buildah "
             "mmdebstrap skopeo umoci uidmap (as root)")
        return 2
    images = build_images(tag=args.tag)
    sizes = {ref: image_size(ref) for ref in (images.controller, images.loadtester)}
    if args.json:
        print(json.dumps({"controller": images.controller, "loadtester": images.loadtester,
                          "sizes": sizes}))
    else:
        for ref, size in sizes.items():
            print(f"{ref}\t{_human(size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
