"""Where the API server is and how to authenticate: kubeconfig or in-cluster.

Flagger's rule (``-kubeconfig``, ``-master``) is kept: an explicit kubeconfig
wins; without one, a process inside a pod uses its service account; outside
a pod, ``$KUBECONFIG`` or ``~/.kube/config`` is used. ``master`` overrides the
server URL of whichever was chosen.

Loading happens once at start-up, so the few blocking file reads inside
kubernetes-asyncio's loaders are acceptable here and nowhere else.
"""

from __future__ import annotations

import os
import pathlib
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from flaggerpy.errors import ConfigError

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"


def default_user_agent() -> str:
    """``flaggerpy/<version>``: how the API server's audit log tells our requests apart."""
    from flaggerpy import __version__  # late: the package root may one day import kube

    return f"flaggerpy/{__version__}"


async def load_configuration(
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        master: str | None = None,
        in_cluster: bool | None = None,
) -> Configuration:
    """Builds a client configuration, choosing the source as Flagger does.

    ``in_cluster=None`` means "decide": in-cluster when no kubeconfig is given
    and ``$KUBERNETES_SERVICE_HOST`` is set (as in every pod). Raises
    ConfigError when the chosen source cannot be read.
    """
    configuration = Configuration()
    use_in_cluster = in_cluster
    if use_in_cluster is None:
        use_in_cluster = kubeconfig is None and bool(os.environ.get(SERVICE_HOST_ENV))
    try:
        if use_in_cluster:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            path = _kubeconfig_path(kubeconfig)
            await load_kube_config(
                config_file=path,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        source = "in-cluster service account" if use_in_cluster else f"kubeconfig {kubeconfig}"
        raise ConfigError(f"cannot load Kubernetes client config from {source}: {exc}") from exc
    if master:
        configuration.host = master.rstrip("/")
    return configuration


async def new_api_client(
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        master: str | None = None,
        in_cluster: bool | None = None,
        user_agent: str | None = None,
) -> ApiClient:
    """An ApiClient for :func:`load_configuration`'s choice, with our user agent set."""
    configuration = await load_configuration(
        kubeconfig=kubeconfig, context=context, master=master, in_cluster=in_cluster)
    if not configuration.proxy:
        configuration.proxy = environment_proxy(str(configuration.host))
    api = ApiClient(configuration=configuration)
    api.user_agent = user_agent or default_user_agent()
    # kubernetes-asyncio's session trusts the environment, so aiohttp looks up the proxy
    # variables (in a thread) and ~/.netrc again for every request: a fifth of the CPU the
    # controller spent initialising canaries. The proxy is read once, above, as client-go does.
    api.rest_client.pool_manager._trust_env = False
    return api


def environment_proxy(url: str) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name for ``url``, unless ``NO_PROXY`` exempts
    its host (client-go's ``ProxyFromEnvironment``); None for a direct connection."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if not host or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme or "https")


def _kubeconfig_path(kubeconfig: str | os.PathLike[str] | None) -> str:
    if kubeconfig is not None:
        path = pathlib.Path(kubeconfig).expanduser()
        if not path.is_file():
            raise ConfigError(f"kubeconfig {path} does not exist")
        return str(path)
    paths = os.environ.get("KUBECONFIG") or str(pathlib.Path.home() / ".kube" / "config")
    if not any(pathlib.Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        raise ConfigError(f"no kubeconfig found at {paths} and not running in a pod")
    return paths


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiServerAccess:
    """How to reach the controller's own API server, for a plugin that talks to it directly.

    Flagger's ``externalmetrics`` provider queries the API server (an aggregated API) with the
    controller's rest config; a plugin gets the same here without depending on
    kubernetes-asyncio: the server URL, TLS settings holding the cluster CA and any client
    certificate, and the bearer token, if the credentials are one (asked again on every call,
    so a rotated service-account token is picked up). ``repr`` shows the host only.
    """

    host: str
    """``https://host:port`` (with the kubeconfig's path prefix, if any)."""
    _configuration: Configuration = field(repr=False)

    def ssl_context(self, *, verify: bool = True,
                    client_certificate: bool = True) -> ssl.SSLContext:
        """TLS with the cluster CA and the client certificate, if any; reads files, so call it
        when a plugin is built. ``verify=False`` (or an insecure kubeconfig) skips checking
        the server's certificate; ``client_certificate=False`` leaves the controller's
        certificate out (a plugin that authenticates with credentials of its own)."""
        configuration = self._configuration
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if client_certificate and configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
        if not verify or not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def authorization(self) -> str | None:
        """The ``Authorization`` header value the controller sends (``Bearer ...``), if any."""
        # The client's own auth settings (a kubeconfig token, or in a pod the service-account
        # token, whose file the refresh hook reads again when it is due).
        settings = await self._configuration.auth_settings()
        for entry in settings.values():
            if entry.get("in") == "header" and str(entry.get("key")).lower() == "authorization":
                value = entry.get("value")
                return str(value) if value else None
        return None


async def api_server_access(
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        master: str | None = None,
) -> ApiServerAccess:
    """The controller's API server and credentials, chosen as :func:`load_configuration` does.

    Raises ConfigError when the source cannot be read.
    """
    configuration = await load_configuration(kubeconfig=kubeconfig, master=master)
    return ApiServerAccess(host=str(configuration.host).rstrip("/"),
                           _configuration=configuration)
