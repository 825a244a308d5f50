"""A reproduction sits beside the reference: runs and the report write to results/local (git-ignored), never to a
tracked file; REFERENCE=1 (paths=reference, --reference) is the maintainers' one way to write the reference."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbam import paths
from lbam.config import compose

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = ["scripts/reproduce.py", "--experiments", "embodiment1_quick", "--no-estimate"]


def _make_n(*args: str) -> str:
    venv = f"VENV={Path(sys.executable).parents[1]}"
    return subprocess.run(
        ["make", "-n", "--no-print-directory", venv, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_results_go_to_the_ignored_local_folder_unless_the_reference_is_asked_for():
    mine, ref = compose([]).paths, compose(["paths=reference"]).paths
    assert Path(mine.results_dir) == paths.results_dir() == ROOT / "results" / "local"
    assert Path(mine.reference_dir) == Path(ref.results_dir) == paths.reference_dir() == ROOT / "results"
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/local/runs/x/y.json"], cwd=ROOT)
    assert ignored.returncode == 0, "results/local must be git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", "results/runs/x/y.json"], cwd=ROOT).returncode == 1


@pytest.mark.parametrize("target", ["quick", "curve", "bridge", "reproduce", "plots", "train", "bench"])
def test_make_writes_the_reference_only_with_reference_1(target):
    plain, reference = _make_n(target), _make_n(target, "REFERENCE=1")
    flag = "paths=reference" if target == "train" else "--reference"
    assert flag not in plain and flag in reference.splitlines()[-1]
    assert "--reference" not in _make_n(target, "REFERENCE=0")


def test_the_plan_says_where_rows_go_and_what_the_reference_holds():
    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce import where
    from sweep_plan import plan

    committed = len(list((ROOT / "results" / "runs" / "embodiment1_curve").glob("*.json")))
    p = plan("embodiment1_curve", [], check_data=False)
    assert committed == 693 and len(p.jobs) == 693
    assert where(p) == (
        f"rows into {ROOT}/results/local (yours, git-ignored); the reference ({ROOT}/results) holds 693 of these "
        "693 runs: the report shows yours beside them"
    )
    ref = where(plan("embodiment1_curve", ["paths=reference"], check_data=False))
    assert ref.startswith(f"rows into the reference, {ROOT}/results (--reference") and "holds 693" in ref


def fresh_clone(dest: Path) -> Path:
    """This working tree as a fresh clone would have it: its tracked and untracked-but-not-ignored files,
    committed in a new repository (so that `git status` tells what a run changed)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():  # a deleted file, or the .venv link, is no part of a clone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run([*git, *cmd], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.mark.slow
def test_a_reproduction_on_a_fresh_clone_changes_no_tracked_file(tmp_path, data_cache):
    clone = fresh_clone(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if k not in ("LBAM_ROOT", "PYTHONPATH")}
    tiny = ["dataset=synthetic_bccd", "trainer=cpu", "dataset.image_size=32", "backbone.width_mult=0.125"]
    tiny += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "attention=eca", "sweeps.settings=[]"]
    tiny += [f"paths.cache_dir={data_cache}"]

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    first = run(*REPRODUCE, "--", *tiny)  # make quick, one tiny run, then the report
    assert "1 finished here" not in first.stdout and f"rows into {clone}/results/local" in first.stdout
    assert "# Your runs beside the reference" in first.stdout and "no reference run" in first.stdout
    assert len(list((clone / "results" / "local" / "runs" / "embodiment1_quick").glob("*.json"))) == 1
    plots = run("-m", "lbam.report")  # make plots
    assert "# Your runs beside the reference" in plots.stdout and "Reference: 7 runs · cpu" in plots.stdout
    again = run(*REPRODUCE, "--no-report", "--", *tiny)  # skip works: marker in experiments/, row in local
    assert "1 finished here, 0 to run" in again.stdout and "[reproduce] -m lbam.train" not in again.stdout
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == "", f"tracked or unignored files changed:\n{status.stdout}"
