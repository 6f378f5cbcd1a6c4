"""``python -m e2e.simulator``: flags become the simulator's config; bad flags exit 2."""

from __future__ import annotations

import pytest

from e2e.simulator.__main__ import parse_args
from e2e.simulator.users import Trait


def test_flags_become_the_config() -> None:
    config, _ = parse_args([
        "--kubeconfig", "/tmp/k", "--namespace", "test", "-n", "prod", "--metrics-port", "9091",
        "--ingress-port", "8080", "--rps", "50", "--max-rps", "300", "--mesh", "linkerd",
        "--user-header", "x-canary=insider:0.1", "--user-cookie", "canary=always:0.2",
        "--seed", "7",
    ])
    assert config.namespaces == ("test", "prod")
    assert (config.metrics_port, config.ingress_port) == (9091, 8080)
    assert (config.rps, config.max_rps, config.mesh, config.seed) == (50, 300, "linkerd", 7)
    assert config.user_headers == (Trait("x-canary", "insider", 0.1),)
    assert config.user_cookies == (Trait("canary", "always", 0.2),)


def test_defaults() -> None:
    config, _ = parse_args(["-n", "test"])
    assert (config.rps, config.mesh, config.ingress_port, config.metrics_port) == (
        20, "istio", None, 0)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-namespace"),
        pytest.param(["-n", "t", "--user-header", "x-canary"], id="bad-trait"),
        pytest.param(["-n", "t", "--rps", "0"], id="zero-rps"),
        pytest.param(["-n", "t", "--mesh", "consul"], id="unknown-mesh"),
    ],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err
