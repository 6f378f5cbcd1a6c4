"""The import contracts in .importlinter hold for the tree, and each one refuses what it forbids.

``make lint`` runs ``tools/lint-imports.sh``; these tests run the same script, once on this
checkout and once per contract on a copy of the package with one forbidden import planted, so a
contract that silently stopped biting (a typo in a module name, a layer that no longer matches
anything, a farm that does not lay out ``providers/`` as ``flaggerpy.providers``) fails here.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "lint-imports.sh"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGE_DIRS = ("flaggerpy", "providers", "metrics", "notifiers")
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / ".importlinter")


def contract_name(contract_id: str) -> str:
    return CONFIG[f"importlinter:contract:{contract_id}"]["name"]


def lint_imports(tmp_path: Path, *, src: Path = ROOT) -> tuple[int, str]:
    """Runs the script on ``src``; its exit status and output, whitespace collapsed."""
    assert LINT_IMPORTS.exists(), "import-linter is not installed: pip install -e '.[lint]'"
    env = {**os.environ, "SRC": str(src), "FARM": str(tmp_path / "farm"),
           "LINT_IMPORTS": str(LINT_IMPORTS), "COLUMNS": "200"}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    status, output = lint_imports(tmp_path)
    assert status == 0, output
    contracts = [s for s in CONFIG.sections() if s.startswith("importlinter:contract:")]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in output, output


@pytest.mark.parametrize(("module", "planted", "contract", "broken_import"), [
    pytest.param("providers/kubernetes.py", "import flaggerpy.canary",
                 "plugins-not-engine", "flaggerpy.providers.kubernetes -> "
                 "flaggerpy.canary", id="plugin-imports-engine"),
    pytest.param("metrics/prometheus.py", "from flaggerpy.providers import istio",
                 "layers", "flaggerpy.metrics.prometheus -> "
                 "flaggerpy.providers.istio", id="plugin-imports-plugin"),
    pytest.param("flaggerpy/canary/lifecycle.py", "from flaggerpy import cli",
                 "layers", "flaggerpy.canary.lifecycle -> flaggerpy.cli",
                 id="engine-imports-process"),
    pytest.param("flaggerpy/kube/keys.py", "from flaggerpy.runtime import workqueue",
                 "kube-not-runtime", "flaggerpy.kube.keys -> "
                 "flaggerpy.runtime.workqueue", id="kube-imports-runtime"),
    pytest.param("flaggerpy/routing.py", "import kubernetes_asyncio",
                 "kubernetes-asyncio-in-kube",
                 "flaggerpy.routing -> kubernetes_asyncio", id="kubernetes-asyncio-outside-kube"),
    pytest.param("flaggerpy/canary/workloads.py", "from flaggerpy.canary import targets",
                 "no-cycles", ".workloads -> .targets", id="cycle"),
])
def test_a_planted_import_breaks_its_contract(
        tmp_path: Path, module: str, planted: str, contract: str, broken_import: str,
) -> None:
    src = tmp_path / "src"
    for name in PACKAGE_DIRS:
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with (src / module).open("a") as file:
        file.write(f"\n{planted}\n")
    status, output = lint_imports(tmp_path, src=src)
    assert status == 1, output
    assert f"{contract_name(contract)} BROKEN" in output, output
    assert broken_import in output, output
