"""Repository-level checks: pins agree, the Makefile and CI entry point do what the README says."""

import re
import subprocess
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


def test_environment_yml_agrees_with_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {}
    for item in pip_section:
        if item.startswith("-e"):
            continue
        name, _, version = item.partition("==")
        conda_pins[name.lower()] = version
    assert conda_pins == _requirements()


def test_torch_pins_are_the_reproduction_versions():
    pins = _requirements()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"


def test_installed_versions_match_pins():
    from importlib.metadata import version

    for name, pinned in _requirements().items():
        assert version(name) == pinned, f"{name}: installed {version(name)} but pinned {pinned}"


def test_make_help_lists_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("help", "test", "reproduce", "quick", "data", "plots", "bench"):
        assert re.search(rf"make {target}\s+\S", out), f"make help does not describe {target!r}:\n{out}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert re.search(r"^make test$", ci, re.M)
    # the two commands come first in the README, before the layout
    assert readme.index("make reproduce") < readme.index("## Layout")


def test_readme_results_block_is_generated_from_committed_rows():
    """The README's numbers come from results/runs via lbam.report, never by hand."""
    from lbam.report.readme import update_readme

    up_to_date, diff = update_readme(ROOT / "README.md", ROOT / "results", check=True)
    assert up_to_date, f"README results block is stale; run `make plots`:\n{diff}"
