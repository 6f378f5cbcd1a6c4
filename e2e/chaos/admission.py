"""A write held at the API server: a validating admission webhook that stops one request.

To kill the controller *between* two writes, the second one must be under way and not done when
the kill lands. Timing a signal cannot promise that; the API server can: a
ValidatingWebhookConfiguration sends the matching writes of one namespace to :class:`HeldWrites`,
which answers them at once (allowed) except while it is armed, when it keeps the next one waiting
until the test releases it, refused. The controller sits in that request meanwhile, its first
write done; the test kills it and the held write never happens.

The API server takes a moment to act on a new webhook configuration, so :meth:`HeldWrites.start`
returns only once a server-side dry-run create of a probe object has reached the webhook.

The webhook serves HTTPS on 127.0.0.1 with a certificate of its own CA (made here, handed to the
API server as the ``caBundle``), as the API server calls webhooks over TLS only.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2e.cluster.localcluster import LocalCluster
from flaggerpy.testing import free_port

__all__ = ["Admitted", "HeldWrites"]


@dataclass(frozen=True)
class Admitted:
    """One write the webhook was asked about, and its answer."""

    name: str
    operation: str
    subresource: str
    allowed: bool


def _certificates(folder: Path) -> tuple[Path, Path, bytes]:
    """A CA and a serving certificate for 127.0.0.1: (cert file, key file, CA in PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "held-writes-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


class HeldWrites:
    """Creates and updates of ``resource`` and its subresources in ``namespace``, through a
    webhook that can hold one of them.

    ``arm(subresource)`` makes it hold the next update of that subresource; ``held`` is set when
    it arrived; ``release()`` refuses it. ``admitted`` lists every write asked about, in order.
    """

    def __init__(self, cluster: LocalCluster, *, namespace: str, group: str,
                 resource: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.group = group
        self.resource = resource
        self.name = f"held-writes-{namespace}"
        self.admitted: list[Admitted] = []
        self.held = asyncio.Event()
        self._armed: str | None = None
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def arm(self, subresource: str) -> None:
        """Hold the next update of ``subresource`` (until :meth:`release`)."""
        self._armed = subresource
        self.held.clear()
        self._released.clear()

    def release(self) -> None:
        """Answer the held write: refused, so it never happens."""
        self._released.set()

    async def _review(self, request: web.Request) -> web.Response:
        review = await request.json()
        asked = review["request"]
        allowed = True
        if self._armed is not None and self._armed == asked.get("subResource") \
                and asked.get("operation") == "UPDATE":
            self._armed = None
            self.held.set()
            await self._released.wait()
            allowed = False
        self.admitted.append(Admitted(name=str(asked.get("name") or ""),
                                      operation=str(asked.get("operation") or ""),
                                      subresource=str(asked.get("subResource") or ""),
                                      allowed=allowed))
        response: dict[str, Any] = {"uid": asked["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 503, "message": "held by the test, then refused"}
        return web.json_response({"apiVersion": "admission.k8s.io/v1",
                                  "kind": "AdmissionReview", "response": response})

    def _configuration(self, port: int, ca: bytes) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [{
                "name": "held-writes.flaggerpy.dev",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/review",
                                 "caBundle": base64.b64encode(ca).decode()},
                "rules": [{"apiGroups": [self.group], "apiVersions": ["*"],
                           "operations": ["CREATE", "UPDATE"],
                           "resources": [self.resource, f"{self.resource}/*"],
                           "scope": "Namespaced"}],
                # This namespace only: the cluster is shared with other tests.
                "namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": self.namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 30,
            }],
        }

    async def start(self, *, probe: dict[str, Any], within: float = 30.0) -> Self:
        """Serves the webhook and registers it; returns once the API server calls it for a
        server-side dry-run create of ``probe`` (an object of ``resource``, never stored)."""
        self._dir = tempfile.TemporaryDirectory(prefix="flaggerpy-held-writes-")
        cert, key, ca = _certificates(Path(self._dir.name))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_post("/review", self._review)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=context).start()
        await self.cluster.akubectl("apply", "-f", "-",
                                    input=json.dumps(self._configuration(port, ca)))
        name = probe["metadata"]["name"]
        deadline = asyncio.get_running_loop().time() + within
        while not any(seen.name == name for seen in self.admitted):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the API server did not call {self.name} in {within}s")
            await self.cluster.akubectl("create", "--dry-run=server", "-n", self.namespace,
                                        "-f", "-", input=json.dumps(probe), check=False)
        return self

    async def aclose(self) -> None:
        """Unregisters the webhook first (no write of the namespace may wait on a dead one)."""
        self._released.set()
        await self.cluster.akubectl("delete", "validatingwebhookconfiguration", self.name,
                                    "--ignore-not-found", check=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
