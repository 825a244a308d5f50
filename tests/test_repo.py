"""Repository-level behaviour: the environment matches its pins, the Makefile and the CI entry point run what the
README says, and the README's results block is generated from the committed rows."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt line {line!r} is not an exact pin"
            pins[name.lower()] = version
    return pins


def test_environment_yml_agrees_with_requirements_and_the_venv_has_them():
    from importlib.metadata import version

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = dict(item.lower().split("==") for item in pip_section if not item.startswith("-e"))
    assert conda == _requirements()
    for name, pinned in _requirements().items():
        assert version(name) == pinned, f"{name}: installed {version(name)} but pinned {pinned}"


def test_make_help_describes_every_target_the_readme_names():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    described = set(re.findall(r"make (\w+)\s+\S", out))
    named = set(re.findall(r"`make (\w+)`", (ROOT / "README.md").read_text()))
    assert named and named <= described, f"README names {named - described} that make help does not describe"


def test_ci_entry_point_runs_make_test(tmp_path):
    # A fake `make` on PATH records its arguments: .ci/run must call exactly `make test`.
    fake = tmp_path / "make"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, check=True, capture_output=True)
    assert (tmp_path / "args").read_text().split() == ["test"]


def test_readme_results_block_is_generated_from_committed_rows():
    """The README's numbers come from results/runs via lbam.report, never by hand."""
    proc = subprocess.run(
        [sys.executable, "-m", "lbam.report", "readme", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"README results block is stale; run `make plots`:\n{proc.stdout}{proc.stderr}"
    )


def test_readme_fits_on_a_screen():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def _make_n(*args: str) -> subprocess.CompletedProcess:
    """`make -n` (print, run nothing) with this interpreter's environment as the venv."""
    venv = f"VENV={Path(sys.executable).parents[1]}"
    return subprocess.run(
        ["make", "-n", "--no-print-directory", venv, *args], cwd=ROOT, capture_output=True, text=True
    )


def test_make_train_jobs_and_device_check_pass_their_arguments():
    train = _make_n("train", "ARGS=experiment=embodiment1_quick attention=lbam").stdout
    assert "-m lbam.train experiment=embodiment1_quick attention=lbam" in train
    for target in ("quick", "curve", "bridge", "reproduce"):
        out = _make_n(target, "JOBS=3").stdout
        assert f"scripts/reproduce.py --profile {target.replace('reproduce', 'full')} --jobs 3" in out
        assert "lbam.data download" not in out  # reproduce.py fetches (or skips) data in its plan
        assert f"--profile {target.replace('reproduce', 'full')} --jobs auto" in _make_n(target).stdout
    for target in ("device-check", "gpu-check"):  # gpu-check: its former name
        check = _make_n(target, "OUT=/tmp/x", "DEVICE=cpu").stdout
        assert "scripts/device_check.py --out /tmp/x --device cpu" in check
        assert (
            "pip install -q --no-index" in check
        )  # from .whl/ when the interpreter lacks hydra, never an index


def test_make_refuses_an_unsupported_python_in_one_line(tmp_path):
    proc = subprocess.run(
        ["make", "-n", "venv", f"VENV={tmp_path}/venv", f"PYTHON={tmp_path}/no-python"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "needs Python 3.11 3.12" in proc.stderr and "not found" in proc.stderr


def test_python_versions_agree():
    makefile = (ROOT / "Makefile").read_text()
    (versions,) = re.findall(r"^PY_VERSIONS := (.+)$", makefile, re.M)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions.split()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10,<3.13"' in pyproject
    assert all(f"Programming Language :: Python :: {v}" in pyproject for v in versions.split())
