"""scripts/: reproduce.py's plan (the declared sweeps expanded as Hydra does, named as the runner names them,
finished runs counted), its failures and bad inputs, its pool (every setting, the first run of each model first,
jobs per experiment) and the estimate's probe in a child process. The device check: tests/test_device_check.py."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from estimate import Probe, jobs_for, probe, train_steps  # noqa: E402
from pool import describe_units, units  # noqa: E402
from sweep_plan import PlanError, describe, expand, plan  # noqa: E402

from lbam.config import compose  # noqa: E402
from lbam.results import Row, write_row  # noqa: E402

REPRODUCE = [sys.executable, str(ROOT / "scripts" / "reproduce.py")]


def tiny(out: Path, cache: Path) -> list[str]:
    return [
        "dataset=synthetic_bccd",
        "profile=test",
        "trainer=cpu",
        "dataset.image_size=32",
        "backbone.width_mult=0.125",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"paths.results_dir={out}/results",
        f"paths.experiments_dir={out}/experiments",
        f"paths.cache_dir={cache}",
    ]


def test_expand_follows_hydras_basic_sweeper():
    jobs, swept = expand(["a=1,2", "b=range(0,3)", "c=x", "a=5,6", "hydra.launcher.n_jobs=2"])
    # a later override of a key replaces the earlier one in its place; hydra's own overrides are not jobs
    assert swept == {"a": ["5", "6"], "b": ["0", "1", "2"]}
    assert jobs[:2] == [["a=5", "b=0", "c=x"], ["a=5", "b=1", "c=x"]] and len(jobs) == 6
    assert expand(["s=null", "t=true"])[0] == [["s=null", "t=True"]]
    with pytest.raises(PlanError, match="only choice sweeps"):
        expand(["lr=interval(0,1)"])
    assert describe(["0", "1", "2", "3"]) == "0-3" and describe(["25", "null"]) == "25,null"


def test_curve_plan_counts_every_grid_and_names_runs_as_the_committed_rows():
    p = plan("embodiment1_curve", [], check_data=False)
    counts = [len(m.jobs) for m in p.multiruns]
    # (sizes x seeds 0-6, 25 crops x seeds 7-59, 100 crops x seeds 7-24) x (6 attentions, then LBAM F x M)
    assert counts == [6 * 4 * 7, 6 * 53, 6 * 18, 4 * 7, 53, 18] and len(p.jobs) == 693
    assert p.multiruns[4].overrides == [
        "experiment=embodiment1_curve",
        "attention=lbam",
        "attention.residual=false",
        "dataset.train_subset=25",
        "seed=range(7,60)",
    ]
    every = {j.name for j in p.jobs}
    committed = {f.stem for f in (ROOT / "results" / "runs" / "embodiment1_curve").glob("*.json")}
    assert committed and committed <= every  # the runner wrote these rows under exactly these names


def test_user_overrides_win_and_a_run_is_finished_with_its_marker_and_row(tmp_path):
    p = plan("embodiment1_quick", [*tiny(tmp_path, tmp_path / "cache"), "seed=3,4"], check_data=False)
    assert {j.seed for j in p.jobs} == {3, 4} and len(p.jobs) == 2 * 7
    job = p.jobs[0]
    assert p.remaining() == p.jobs and p.failure(job) == "no row written"
    p.run_dir(job).mkdir(parents=True)
    (p.run_dir(job) / "finished.json").write_text("{}")
    assert not p.finished(job)  # the marker alone is not enough: the row must exist
    row = Row(**{k: "x" for k in ("experiment", "run_name", "dataset", "backbone", "attention", "placement")},
              profile="test", seed=job.seed, overrides=[], synthetic=True, attention_kwargs={}, width_mult=1.0,
              image_size=32, status="failed", error="ValueError: loss is nan")  # fmt: skip
    row.experiment, row.run_name = p.name, job.name
    write_row(row, None, p.cfg.paths.results_dir)
    assert p.finished(job) and len(p.remaining()) == len(p.jobs) - 1
    other = p.jobs[1]
    row.run_name = other.name
    write_row(row, None, p.cfg.paths.results_dir)
    assert p.failure(other) == "ValueError: loss is nan"  # a failed row names its error


def test_train_steps_follow_the_config():
    curve = compose(["experiment=embodiment1_curve", "dataset.train_subset=25"])
    assert train_steps(curve, 4001, 4001) == 300  # the step budget
    quick = compose(["experiment=embodiment1_quick", "trainer.limit_train_batches=3"])
    assert train_steps(quick, 4001, 4001) == 3 * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiments", "nope"], "unknown experiment 'nope'; valid: embodiment1,"),
        (["--jobs", "0"], "--jobs must be auto or an integer >= 1"),
        (["--experiments", "embodiment1_quick", "--", "seed=[1"], "cannot parse the overrides"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = subprocess.run([*REPRODUCE, "--plan", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_plan_skips_an_experiment_whose_dataset_is_missing_and_says_how_to_get_it(tmp_path):
    env = {**os.environ, "LBAM_DATA_DIR": str(tmp_path)}  # empty: neither dataset is here
    args = ["--plan", "--experiments", "embodiment2_quick", "--", "dataset.download=false"]
    proc = subprocess.run([*REPRODUCE, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("[plan] embodiment2_quick")]
    assert "SKIPPED" in line and "python -m lbam.data download dataset=oxford_pets" in line
    assert "LBAM_DATA_DIR" in line and "make data" in line


@pytest.mark.slow
def test_one_pool_runs_every_setting_first_runs_first_then_rerun_skips_and_a_failure_exits_1(
    tmp_path, data_cache
):
    """Two settings (the declared LBAM residual=false and none) x 2 seeds, 2 at once, compiled (aot_eager: the
    ordering, not inductor): one pool; each model's seed 1 starts after its seed 0 has ended (inductor's cache)."""
    base = [*REPRODUCE, "--experiments", "embodiment1_quick", "--jobs", "2", "--no-estimate", "--no-report"]
    compiled = ["model.compile=true", "model.compile_backend=aot_eager"]
    overrides = [
        "--",
        *tiny(tmp_path, data_cache),
        "hydra.sweeper.params.attention=none",
        "seed=0,1",
        *compiled,
    ]
    first = subprocess.run([*base, *overrides], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "total: 4 runs, 0 finished here, 4 to run" in first.stdout
    assert "jobs: 2 at once (--jobs / JOBS)" in first.stdout
    assert (
        "pool: 4 runs in 4 processes of 1 run(s), 2 at once; the first run of each of 2 models first"
        in first.stdout
    )
    events = [x for x in first.stdout.splitlines() if x.startswith("[reproduce] ")]
    p = plan("embodiment1_quick", overrides[1:], check_data=False)
    assert {j.attention for j in p.jobs} == {"none", "lbam"} and len(p.jobs) == 4
    for job in p.jobs:
        row = json.loads(p.row_file(job).read_text())
        assert row["status"] == "ok" and row["attention"] == job.attention and row["run_name"] == job.name
        assert row["concurrent_jobs"] == 2  # its images/s was shared with the other run
        assert row["compiles"] == 1  # training's graph only: evaluation is eager
        if job.seed == 1:  # started after the first run of its model had ended
            (leader,) = [j for j in p.jobs if j.seed == 0 and j.attention == job.attention]
            done = next(
                i for i, x in enumerate(events) if x.startswith("[reproduce] done") and leader.name in x
            )
            start = next(
                i
                for i, x in enumerate(events)
                if x.endswith(" seed=1") and f"attention={job.attention} " in x
            )
            assert done < start, events
    assert sum(x.startswith("[reproduce] -m lbam.train") for x in events[:2]) == 2  # both first runs at once
    again = subprocess.run([*base, *overrides], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 finished here, 0 to run" in again.stdout
    assert "[reproduce] -m lbam.train" not in again.stdout  # nothing left: no process started
    # trainer.max_epochs=0 is a config error: that run writes no row, and the command says so and fails
    failing = [
        "--",
        *tiny(tmp_path, data_cache),
        "attention=none",
        "trainer.max_epochs=0",
        "sweeps.settings=[]",
    ]
    bad = subprocess.run([*base, *failing], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "1 run(s) did not finish" in bad.stderr
    assert "no row written" in bad.stderr


def _paths(out: Path) -> list[str]:
    return [f"paths.results_dir={out}/results", f"paths.experiments_dir={out}/experiments"]


def test_a_gpu_protocol_is_one_pool_with_each_models_first_run_first(tmp_path):
    p = plan("embodiment1", _paths(tmp_path), check_data=False)
    pool = units(p, 9, compiled=True)
    assert [len(u.jobs) for u in pool] == [1] * 21  # a process a run: no slot waits on a long last unit
    assert sorted(j.name for u in pool for j in u.jobs) == sorted(j.name for j in p.jobs)  # every setting
    firsts = pool[:7]
    assert all(u.first for u in firsts) and not any(u.first for u in pool[7:])
    assert [(u.jobs[0].attention, u.jobs[0].seed) for u in firsts] == [
        (a, 0) for a in ("none", "se", "cbam", "bam", "eca", "lbam", "lbam")
    ]  # the last is LBAM residual=false, the declared setting
    assert {u.model for u in pool[7:]} == {u.model for u in firsts}  # each waits for its model's first run
    assert "the first run of each of 7 models first" in describe_units(pool, 9, compiled=True)
    declared = units(
        p, 1, compiled=True
    )  # one at a time: the declared multiruns, each model's seeds in a row
    assert [len(u.jobs) for u in declared] == [18, 3] and [u.overrides for u in declared] == [
        m.overrides for m in p.multiruns
    ]


def test_a_cpu_pool_chunks_seeds_longest_first(tmp_path):
    p = plan("embodiment1_curve", _paths(tmp_path), check_data=False)
    pool = units(p, 2, compiled=False)
    sizes = [len(u.jobs) for u in pool]
    assert sum(sizes) == 693 and sizes == sorted(sizes, reverse=True) and all(u.first for u in pool)
    assert (
        sizes[:7] == [60] * 7 and len(pool) == 28
    )  # one process per model (setting x size): 60, 25 or 7 seeds
    assert all(len({j.attention for j in u.jobs}) == 1 for u in pool)
    assert units(p, 2, compiled=False)[0].overrides[-1] == "seed=" + ",".join(map(str, range(60)))


def test_jobs_auto_is_one_on_the_cpu_and_what_fits_on_a_gpu():
    gib = 2**30
    assert jobs_for(None, 21)[0] == 1
    cpu = Probe(device="cpu", gpu=False, seconds=1.0, models=1, runs=21, load=0.0)
    assert jobs_for(cpu, 21, cores=16)[0] == 1
    vgg = Probe(
        "H100", True, None, 7, 21, None, need_bytes=6 * gib, need_model="vgg16+cbam", free_bytes=80 * gib
    )
    n, why = jobs_for(vgg, 21, cores=16)
    assert n == 12 and "vgg16+cbam" in why  # 80 x 0.9 / 6
    cnn4 = Probe(
        "H100", True, None, 7, 21, None, need_bytes=2 * gib, need_model="cnn4+lbam", free_bytes=80 * gib
    )
    assert jobs_for(cnn4, 21, cores=16)[0] == 14  # 36 fit; each run drives the GPU from a core: 16 - 2
    assert jobs_for(cnn4, 3, cores=16)[0] == 3  # no more than the runs left
    assert jobs_for(replace(vgg, free_bytes=gib), 21, cores=16)[0] == 1  # at least one


@pytest.mark.slow
def test_the_estimate_probes_in_a_child_process(tmp_path, data_cache):
    overrides = [*tiny(tmp_path, data_cache), "attention=none", "sweeps.settings=[]"]
    p = plan("embodiment1_quick", overrides, check_data=False)
    measured = probe(p, p.remaining())
    assert measured.runs == 1 and measured.models == 1 and not measured.gpu and measured.seconds > 0
    assert "estimate ~" in measured.line() and "summed over 1 runs" in measured.line()
    assert probe(p, p.remaining(), time_it=False) is None  # nothing to learn on the CPU without a time
