"""The Makefile's two commands: which python they use, and that a failing test fails `make test`.

The full path (a fresh .venv from Debian's python, installing everything) runs in .ci/run; these
checks are the fast part: `make -n` shows the plan, and a fake virtualenv whose python is this
interpreter runs the real `make test` recipe without installing anything.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args, env=None, timeout=120):
    env = {k: v for k, v in (env or os.environ).items() if k != "MAKEFLAGS"}
    return subprocess.run(["make", "--no-print-directory", "-C", ROOT, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _without_venv():
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}


@pytest.mark.parametrize("target", ["test", "demo"])
def test_without_a_virtualenv_make_builds_and_uses_dot_venv(target):
    plan = _make("-n", "-B", target, "PYTHON=/opt/some/python3", env=_without_venv()).stdout
    assert "/opt/some/python3 -m venv .venv" in plan
    assert '.venv/bin/python -m pip install -q -e ".[demo,test,bench,dev,distributed]"' in plan
    assert f".venv/bin/python -m {'pytest' if target == 'test' else 'tinygrad_bn demo'}" in plan


@pytest.mark.parametrize("target", ["test", "demo"])
def test_an_active_virtualenv_is_used_as_it_is(target, tmp_path):
    env = dict(os.environ, VIRTUAL_ENV=str(tmp_path / "venv"))
    plan = _make("-n", "-B", target, env=env).stdout
    assert "-m venv" not in plan.replace("python3-venv", "")
    assert f"{tmp_path}/venv/bin/python -m pip install" in plan
    assert f"{tmp_path}/venv/bin/python -m" in plan.splitlines()[-1]


def _fake_venv(tmp_path):
    """A "virtualenv" whose python is this interpreter, already set up (nothing to install)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # A wrapper, not a symlink: a symlinked venv python would lose its venv's packages.
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (venv / ".tinygrad_bn-installed").touch()
    stamp_time = os.path.getmtime(os.path.join(ROOT, "pyproject.toml")) + 1
    os.utime(venv / ".tinygrad_bn-installed", (stamp_time, stamp_time))
    return dict(os.environ, VIRTUAL_ENV=str(venv), SYSTEM_PACKAGES="")


def test_make_test_fails_when_a_test_fails_and_prints_pytests_verdict(tmp_path):
    (tmp_path / "test_one.py").write_text(
        "def test_passes():\n    assert 1 + 1 == 2\n\n"
        "def test_fails():\n    assert 1 + 1 == 3\n")
    done = _make("test", f"PYTEST_ARGS=-p no:cacheprovider {tmp_path / 'test_one.py'}",
                 env=_fake_venv(tmp_path))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout.splitlines()[-1], done.stdout


def test_make_test_passes_when_the_tests_pass(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_passes():\n    assert 1 + 1 == 2\n")
    done = _make("test", f"PYTEST_ARGS=-p no:cacheprovider {tmp_path / 'test_one.py'}",
                 env=_fake_venv(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout.splitlines()[-1]
