"""A non-editable install works: the wheel carries the Hydra configs, and `lbam-train` composes them from a folder
that is not the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from report_rows import put

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds and installs a wheel (~20 s)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, site folder): the wheel built from a copy of the sources (the build writes build/ and
    *.egg-info beside them) and installed with --target."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lbam", src / "lbam", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", src / "configs", ignore=shutil.ignore_patterns("local"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("lbam-*.whl")
    site = tmp / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, site


def test_configs_live_at_the_top_level_and_the_package_has_no_second_copy():
    assert (ROOT / "configs" / "train.yaml").is_file() and not (ROOT / "lbam" / "configs").exists()
    from lbam.paths import CONFIG_DIR

    assert CONFIG_DIR == ROOT / "configs"


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lbam").rglob("__init__.py")}
    assert found | {"lbam.configs"} == listed, "pyproject.toml's [tool.setuptools] packages must list lbam/'s"


def test_wheel_contains_every_config(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert "configs/train.yaml" in configs and "configs/experiment/embodiment1.yaml" in configs
    assert "configs/hydra/launcher/parallel.yaml" in configs
    missing = [c for c in configs if f"lbam/{c}" not in names and not c.startswith("configs/local/")]
    assert not missing, f"the wheel lacks {missing}"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lbam").rglob("*.py")}
    assert not modules - names, f"the wheel lacks {sorted(modules - names)}"


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LBAM_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # the installed copy only: the checkout is not on the path
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_lbam_train_composes_its_configs_outside_the_checkout(installed, tmp_path):
    _, site = installed
    where = _run_installed(site, tmp_path, sys.executable, "-c", "import lbam; print(lbam.__file__)")
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), where.stderr
    script = site / "bin" / "lbam-train"
    assert script.is_file()
    helped = _run_installed(site, tmp_path, sys.executable, str(script), "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "== Configuration groups ==" in helped.stdout and "experiment: " in helped.stdout
    assert "embodiment1_curve" in helped.stdout  # the experiment files are found in the installed package
    cfg_job = ["--cfg", "job", "--resolve", "experiment=embodiment1"]
    composed = _run_installed(site, tmp_path, sys.executable, "-m", "lbam.train", *cfg_job)
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "experiment_name: embodiment1" in composed.stdout and "name: cnn4" in composed.stdout
    # An installed copy's project folders follow the working directory, not site-packages, and it says so.
    assert f"results_dir: {tmp_path.resolve()}/results/local" in composed.stdout
    assert f"reference_dir: {tmp_path.resolve()}/results\n" in composed.stdout
    assert composed.stderr.startswith(
        f"lbam-train: no checkout holds this lbam, so outputs go under the working directory {tmp_path.resolve()}"
    )
    assert not list(tmp_path.iterdir()), "printing the config must not write anything"


def test_installed_lbam_report_works_without_a_readme(installed, tmp_path):
    _, site = installed
    report = [sys.executable, str(site / "bin" / "lbam-report")]
    fresh = _run_installed(site, tmp_path, *report)
    assert fresh.returncode == 0 and "no runs of yours under" in fresh.stdout, fresh.stderr
    assert "lbam-report: no checkout holds this lbam" in fresh.stderr
    put(tmp_path / "results", "none", 0)  # a reference row (of an experiment without a file: an "other" run)
    done = _run_installed(site, tmp_path, *report, "--reference")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{tmp_path.resolve()}/README.md: not found, README results block skipped" in done.stdout
    assert (tmp_path / "results" / "tables" / "exp.md").is_file()
