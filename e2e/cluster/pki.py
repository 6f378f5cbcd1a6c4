"""Certificates for the local control plane, made with the openssl command line.

One CA signs the API server's serving certificate and one client certificate per component, so
the API server runs with client-certificate authentication and RBAC as a real cluster does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: CN is the user, O the groups."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
)


FRONT_PROXY_CA = "front-proxy-ca"
"""The CA of the aggregation layer's front-proxy client certificate (``<stem>.crt/.key``)."""
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The front proxy's certificate stem and CN (``--requestheader-allowed-names``)."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _subject(identity: ClientIdentity) -> str:
    parts = [f"/CN={identity.user}"] + [f"/O={group}" for group in identity.groups]
    return "".join(parts)


def create(pki_dir: Path, *, service_ip: str) -> None:
    """Writes ca, apiserver, client and service-account key material into ``pki_dir``."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=flaggerpy-local-ca",
        cwd=pki_dir,
    )
    (pki_dir / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:" + service_ip + ",DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _sign(pki_dir, "apiserver", "/CN=kube-apiserver", extfile="apiserver.ext")
    (pki_dir / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for identity in CLIENTS:
        _sign(pki_dir, identity.file_stem, _subject(identity), extfile="client.ext")
    # The aggregation layer's front proxy: the API server presents front-proxy-client when it
    # proxies to an aggregated API (APIService), and an extension server trusts the user in
    # its X-Remote-* headers only from a client certificate of this separate CA.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{FRONT_PROXY_CA}.key",
             "-out", f"{FRONT_PROXY_CA}.crt", "-days", "3650", "-subj",
             "/CN=flaggerpy-front-proxy-ca", cwd=pki_dir)
    _sign(pki_dir, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}", extfile="client.ext",
          ca=FRONT_PROXY_CA)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki_dir)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki_dir)


def serving_certificate(directory: Path, *, stem: str, dns_names: tuple[str, ...]) -> Path:
    """A CA of its own (``<stem>-ca.crt``) and a serving certificate for ``dns_names``.

    For a local server that the API server calls (an aggregated API behind an APIService,
    whose ``caBundle`` is the CA): returns the CA's path; ``<stem>.crt/.key`` are beside it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}-ca.key",
             "-out", f"{stem}-ca.crt", "-days", "30", "-subj", f"/CN={stem}-ca", cwd=directory)
    sans = ",".join(f"DNS:{name}" for name in dns_names)
    (directory / f"{stem}.ext").write_text(
        f"subjectAltName={sans},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _sign(directory, stem, f"/CN={dns_names[0]}", extfile=f"{stem}.ext", ca=f"{stem}-ca")
    return directory / f"{stem}-ca.crt"


def _sign(pki_dir: Path, stem: str, subject: str, *, extfile: str, ca: str = "ca") -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{stem}.key",
        "-out",
        f"{stem}.csr",
        "-subj",
        subject,
        cwd=pki_dir,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{stem}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{stem}.crt",
        "-days",
        "3650",
        "-extfile",
        extfile,
        cwd=pki_dir,
    )
