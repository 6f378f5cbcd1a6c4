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
    api = ApiClient(configuration=configuration)
    api.user_agent = user_agent or default_user_agent()
    return api


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
