"""Starts and stops a local Kubernetes control plane on free loopback ports.

The processes are etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with fake
nodes.

Each cluster lives in its own state folder (certificates, kubeconfigs, etcd data, logs, the audit
log and ``state.json`` with the ports and the pids of the processes it started), so two clusters run
side by side and ``down`` stops exactly what ``up`` started. The processes outlive the command that
started them: a developer keeps one cluster running and points tests at it with
``FLAGGERPY_CLUSTER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e.cluster import build, pki

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = Path(os.environ.get("FLAGGERPY_CLUSTER_ROOT", REPO_ROOT / ".cluster"))
SHARED_CRDS = (
    Path(os.environ.get("FLAGGERPY_SHARED_DIR", REPO_ROOT.parent / "shared")) / "reference" / "crds"
)
# Upstream CRDs kept in this repository (each file names its source), applied with the shared ones.
REPO_CRDS = REPO_ROOT / "e2e" / "crds"
# Flagger's own CRDs are replaced by ours (charts/flaggerpy/crds): not installed by default.
UPSTREAM_CRDS_EXCLUDED = ("flagger-crd.yaml",)
# No upstream apiextensions/v1 CRD serves SMI TrafficSplit v1alpha3 (crds/SOURCES.md, "gaps"):
# the golden corpus was recorded with this JSON patch adding it (served, not stored) to the SMI CRD,
# and the CRD is installed with it here too, so `smi:v1alpha3` can be tested.
SMI_V1ALPHA3_PATCH = SHARED_CRDS.parent / "golden" / "_support" / "smi-v1alpha3-version-patch.json"
SMI_CRD_FILE = "smi-trafficsplit.yaml"

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
NODE_COUNT = 2

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# One event per request: RequestReceived would duplicate every entry.
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""


# Processes started by this Python process, kept so they are reaped (not left as zombies or
# reported as leaked) when the same process stops them, as a test session does.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _log(message: str) -> None:
    print(f"[e2e/cluster] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; the message carries its stderr so a failing test says why."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, output=result.stdout, stderr=result.stderr)

    def __str__(self) -> str:
        args = " ".join(str(a) for a in self.cmd[1:] if not str(a).startswith("--kubeconfig"))
        return f"kubectl {args} failed ({self.returncode}): {self.stderr.strip()}"


@dataclass
class State:
    """What ``up`` wrote to ``state.json``: enough for ``down`` and for reuse by tests."""

    name: str
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    kwok_port: int
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_seconds: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"


class LocalCluster:
    """One local control plane, identified by its state folder."""

    def __init__(
        self, name: str = "default", *, root: Path | None = None,
        workload_qps: int | None = None,
    ) -> None:
        """``workload_qps``: the controller-manager's and the scheduler's requests per second to
        the API server (their defaults are 20 and 50, with 5 workers per controller-manager
        controller), for clusters that must roll out thousands of Deployments at once: a scale
        benchmark measures the operator, not the cluster's client limits. Only a cluster
        started here uses it."""
        self.name = name
        self.state_dir = (root or DEFAULT_ROOT) / name
        self.workload_qps = workload_qps

    # -- paths -----------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def bin_dir(self) -> Path:
        return build.BIN_LINK

    @property
    def server(self) -> str:
        return self.state().server

    @property
    def etcd_url(self) -> str:
        return self.state().etcd_url

    def state(self) -> State:
        return State(**json.loads(self._state_file.read_text()))

    def _save(self, state: State) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, self._state_file)

    # -- status ----------------------------------------------------------------------------------
    def is_running(self) -> bool:
        """True when every recorded process is alive and the API server answers /readyz."""
        if not self._state_file.exists():
            return False
        state = self.state()
        expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        if set(state.pids) != expected or not all(self._owns(pid) for pid in state.pids.values()):
            return False
        return self._readyz(state)

    def _owns(self, pid: int) -> bool:
        """The pid is alive and is one of ours: its command line names our state folder."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.state_dir).encode() in cmdline

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return context

    def _readyz(self, state: State) -> bool:
        try:
            with urllib.request.urlopen(
                f"{state.server}/readyz", context=self._ssl_context(), timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- up --------------------------------------------------------------------------------------
    def up(self, *, install_crds: bool = False, timeout: float = 120.0) -> State:
        """Starts the cluster (or returns the running one) and waits until nodes are Ready."""
        if self.is_running():
            _log(f"cluster {self.name!r} already running at {self.state().server}")
            if install_crds:
                self.install_upstream_crds()
            return self.state()
        if self.state_dir.exists():
            self.down(quiet=True)
        binaries = build.ensure_binaries()
        started = time.monotonic()
        self.state_dir.mkdir(parents=True)
        self.logs_dir.mkdir()
        pki.create(self.pki_dir, service_ip=SERVICE_IP)
        state = State(
            name=self.name,
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            apiserver_port=free_port(),
            kwok_port=free_port(),
            started_at=time.time(),
        )
        self._save(state)
        for stem in ("admin", "controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(state, stem)
        (self.state_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        deadline = time.monotonic() + timeout
        try:
            self._start(state, "etcd", self._etcd_args(binaries, state))
            self._wait(lambda: self._etcd_healthy(state), deadline, "etcd /health")
            self._start(state, "kube-apiserver", self._apiserver_args(binaries, state))
            self._wait(lambda: self._readyz(state), deadline, "kube-apiserver /readyz")
            self._start(state, "kube-controller-manager", self._controller_manager_args(binaries))
            self._start(state, "kube-scheduler", self._scheduler_args(binaries))
            self._start(state, "kwok", self._kwok_args(binaries, state))
            self._create_nodes()
            self._wait(self._nodes_ready, deadline, f"{NODE_COUNT} Ready nodes")
            self._wait(self._default_service_account, deadline, "the default ServiceAccount")
        except BaseException:
            _log(f"start failed; logs are in {self.logs_dir}")
            self._stop_processes(state)
            raise
        state.ready_seconds = round(time.monotonic() - started, 2)
        self._save(state)
        if install_crds:
            self.install_upstream_crds()
        _log(f"cluster {self.name!r} ready in {state.ready_seconds}s at {state.server}")
        return state

    def _start(self, state: State, name: str, args: Sequence[str]) -> None:
        log_file = (self.logs_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            start_new_session=True,  # outlives `up`, and Ctrl-C in the caller's terminal
        )
        log_file.close()
        _CHILDREN[process.pid] = process
        state.pids[name] = process.pid
        self._save(state)

    @staticmethod
    def _wait(check: object, deadline: float, what: str) -> None:
        assert callable(check)
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

    def _etcd_healthy(self, state: State) -> bool:
        try:
            with urllib.request.urlopen(f"{state.etcd_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _write_kubeconfig(self, state: State, stem: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": state.server,
                        "certificate-authority": str(self.pki_dir / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": stem,
                    "user": {
                        "client-certificate": str(self.pki_dir / f"{stem}.crt"),
                        "client-key": str(self.pki_dir / f"{stem}.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": stem}}],
            "current-context": self.name,
        }
        target = self.kubeconfig if stem == "admin" else self.state_dir / f"{stem}.kubeconfig"
        # JSON is valid YAML, so kubectl and every client library read it.
        target.write_text(json.dumps(config, indent=2))

    def _etcd_args(self, binaries: Path, state: State) -> list[str]:
        client = f"http://127.0.0.1:{state.etcd_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        return [
            str(binaries / "etcd"),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync=true",  # test data: durability is not worth the latency
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]

    def _apiserver_args(self, binaries: Path, state: State) -> list[str]:
        p = self.pki_dir
        return [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers={state.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.apiserver_port}",
            f"--cert-dir={p}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            # The aggregation layer (APIService), as kubeadm sets it up: the API server proxies
            # to an extension server with the front-proxy client certificate and the caller in
            # X-Remote-* headers, which the extension server trusts from that CA only.
            f"--requestheader-client-ca-file={p / (pki.FRONT_PROXY_CA + '.crt')}",
            f"--requestheader-allowed-names={pki.FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / (pki.FRONT_PROXY_CLIENT + '.crt')}",
            f"--proxy-client-key-file={p / (pki.FRONT_PROXY_CLIENT + '.key')}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Endpoints may not hold loopback addresses, so the apiserver does not publish itself.
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={self.state_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            # Never rotated: 0 would mean the log library's default, a new file every 100 MB,
            # which a whole test run passes; a test reading the log from an offset must not
            # find it moved away (a whole test run writes a few hundred megabytes).
            "--audit-log-maxsize=1000000",
            # PodTemplates bypass the watch cache, so a watch from before an etcd compaction gets
            # 410 Gone on demand (tests of the informer's relist path); everything else is cached.
            "--watch-cache-sizes=podtemplates#0",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_args(self, binaries: Path) -> list[str]:
        kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        p = self.pki_dir
        return [
            str(binaries / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--v=1",
            *([] if self.workload_qps is None else [
                f"--kube-api-qps={self.workload_qps}",
                f"--kube-api-burst={2 * self.workload_qps}",
                "--concurrent-deployment-syncs=50",
                "--concurrent-replicaset-syncs=50",
            ]),
        ]

    def _scheduler_args(self, binaries: Path) -> list[str]:
        kubeconfig = self.state_dir / "scheduler.kubeconfig"
        return [
            str(binaries / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
            *([] if self.workload_qps is None else [
                f"--kube-api-qps={self.workload_qps}",
                f"--kube-api-burst={2 * self.workload_qps}",
            ]),
        ]

    def _kwok_args(self, binaries: Path, state: State) -> list[str]:
        p = self.pki_dir
        return [
            str(binaries / "kwok"),
            f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            f"--config={binaries / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            f"--node-port={state.kwok_port}",
            f"--server-address=127.0.0.1:{state.kwok_port}",
            f"--tls-cert-file={p / 'kwok.crt'}",
            f"--tls-private-key-file={p / 'kwok.key'}",
            "--node-lease-duration-seconds=40",
            # kwok reads the kubeconfig's folder for its own files; keep them in the state folder.
            f"--node-name=kwok-{self.name}",
        ]

    def _create_nodes(self) -> None:
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{index}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": f"kwok-node-{index}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                },
            }
            for index in range(NODE_COUNT)
        ]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )

    def _nodes_ready(self) -> bool:
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        items = json.loads(result.stdout)["items"]
        ready = [
            node
            for node in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) >= NODE_COUNT

    def _default_service_account(self) -> bool:
        return (
            self.kubectl(
                "get", "serviceaccount", "default", "-n", "default", check=False
            ).returncode
            == 0
        )

    # -- tools -----------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs the pinned kubectl against this cluster as the admin user."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    async def akubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The async twin of :meth:`kubectl`, for use inside a running event loop."""
        process = await asyncio.create_subprocess_exec(
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await process.communicate(input.encode() if input is not None else None)
        result = subprocess.CompletedProcess(
            ["kubectl", *args], process.returncode or 0, stdout.decode(), stderr.decode()
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def install_crds(self, files: Iterable[Path]) -> None:
        """Server-side applies CRD files and waits until every CRD is Established."""
        for path in files:
            self.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=flaggerpy-e2e",
                "-f",
                str(path),
            )
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

    def install_upstream_crds(self) -> None:
        files = sorted(
            p for p in SHARED_CRDS.glob("*.yaml") if p.name not in UPSTREAM_CRDS_EXCLUDED
        ) + sorted(REPO_CRDS.glob("*.yaml"))
        if not files:
            raise FileNotFoundError(f"no CRDs found in {SHARED_CRDS}")
        # Every test process that reuses a running cluster asks for them: once they are in,
        # the same files are not applied again (a minute of API server work on a busy machine).
        digest = hashlib.sha256()
        for path in [*files, SMI_V1ALPHA3_PATCH]:
            digest.update(path.name.encode() + b"\0" +
                          (path.read_bytes() if path.exists() else b""))
        stamp = self.state_dir / "upstream-crds.sha256"
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        started = time.monotonic()
        self.install_crds([self._with_smi_v1alpha3(p) for p in files])
        stamp.write_text(digest.hexdigest())
        _log(f"installed {len(files)} upstream CRD files in {time.monotonic() - started:.1f}s")

    def _with_smi_v1alpha3(self, path: Path) -> Path:
        """The SMI CRD file with the corpus's ``v1alpha3`` version added; other files as they are.

        Patched before it is applied (kubectl ``patch --local``, written to the state folder),
        not after: a CRD's ``versions`` is an atomic list, so every server-side apply of the
        upstream file would otherwise drop the version for other test sessions in between.
        """
        if path.name != SMI_CRD_FILE or not SMI_V1ALPHA3_PATCH.exists():
            return path
        patched = self.kubectl("patch", "--local", "-f", str(path), "--type=json",
                               f"--patch-file={SMI_V1ALPHA3_PATCH}", "-o", "json")
        target = self.state_dir / f"{path.stem}-v1alpha3-{os.getpid()}.json"  # one per session
        target.write_text(patched.stdout)
        return target

    def compact(self) -> int:
        """Compacts etcd at its current revision, so older resourceVersions get 410 Gone."""
        state = self.state()
        status = _post_json(f"{state.etcd_url}/v3/kv/range", {"key": "Lw=="})  # "/"
        header = status["header"]
        assert isinstance(header, dict)
        revision = int(header["revision"])
        _post_json(
            f"{state.etcd_url}/v3/kv/compaction", {"revision": str(revision), "physical": True}
        )
        return revision

    # -- restart one component ---------------------------------------------------------------------
    def restart(self, component: str, *, down_for: float = 0.0, timeout: float = 120.0) -> None:
        """Stops ``etcd`` or ``kube-apiserver`` (SIGTERM, SIGKILL after 10 s) and starts it again
        with the same flags, ports and data after ``down_for`` seconds; returns once it serves.

        For the chaos suite: clients see the API server go away mid-run, or the API server lose
        its store, as in a control-plane upgrade. Never on a cluster other tests are using.
        """
        state = self.state()
        binaries = build.ensure_binaries()
        args = {"etcd": self._etcd_args, "kube-apiserver": self._apiserver_args}[component]
        pid = state.pids[component]
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._owns(pid):
            time.sleep(0.05)
        if self._owns(pid):
            _signal(pid, signal.SIGKILL)
        _reap(pid)
        time.sleep(down_for)
        self._start(state, component, args(binaries, state))
        ready = self._etcd_healthy if component == "etcd" else self._readyz
        self._wait(lambda: ready(state), time.monotonic() + timeout, f"{component} serving")

    # -- down ------------------------------------------------------------------------------------
    def down(self, *, quiet: bool = False) -> None:
        """Stops exactly the processes ``up`` started (by pid) and removes the state folder."""
        if self._state_file.exists():
            self._stop_processes(self.state())
        if self.state_dir.exists():
            subprocess.run(["rm", "-rf", str(self.state_dir)], check=True)
            if not quiet:
                _log(f"cluster {self.name!r} stopped and removed")
        elif not quiet:
            _log(f"no cluster {self.name!r} in {self.state_dir}")

    def _stop_processes(self, state: State) -> None:
        ours = {name: pid for name, pid in state.pids.items() if self._owns(pid)}
        # Reverse start order: clients first, etcd last, so nothing logs a storm of errors.
        for name in reversed(list(ours)):
            _signal(ours[name], signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(self._owns(pid) for pid in ours.values()):
            time.sleep(0.1)
        for pid in ours.values():
            if self._owns(pid):
                _signal(pid, signal.SIGKILL)
        for pid in ours.values():
            _reap(pid)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collects the exit status when ``pid`` is our own child, so no zombie keeps its pid alive."""
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.load(response)
        return result
