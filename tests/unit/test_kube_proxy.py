"""The API server's proxy is read from the environment once, not on every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from flaggerpy.kube import config

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://api.example.test:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_the_environments_proxy_is_taken_once_and_requests_do_not_ask_again(
        kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    api = await config.new_api_client(kubeconfig=kubeconfig)
    try:
        assert api.configuration.proxy == "http://proxy.example.test:3128"
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()


async def test_no_proxy_exempts_the_api_server(
        kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", ".example.test")
    api = await config.new_api_client(kubeconfig=kubeconfig)
    try:
        assert not api.configuration.proxy
    finally:
        await api.close()


def test_without_proxy_variables_the_connection_is_direct() -> None:
    assert config.environment_proxy("https://10.0.0.1:443") is None
