"""scripts/: reproduce.py's plan (the declared sweeps expanded as Hydra does, named as the runner names them,
finished runs counted), its failures and bad inputs, several runs at once through the joblib launcher, and the
gpu check on the CPU."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow
def test_gpu_check_on_the_cpu_writes_its_table_under_out(tmp_path):
    """`make gpu-check DEVICE=cpu` runs this script: every stage, at tiny sizes (several minutes on 2 cores)."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    rows = json.loads((out / "gpu_check.json").read_text())
    assert proc.returncode == 0, [r for r in rows if not r["ok"]] or proc.stderr[-3000:]
    by = {(r["stage"], r["item"]): r["result"] for r in rows}
    assert by[("env", "CUDA / driver / bf16 native")] == "none"
    assert float(by[("train", "test balanced accuracy")].rstrip(" %")) > 0
    steps = {item for stage, item in by if stage == "steps" and item != "stage time"}
    assert steps == {
        f"{b} {a} eager" for b in ("cnn4", "vgg16") for a in ("none", "se", "cbam", "bam", "eca", "lbam")
    }
    assert by[("ddp", "2 x cpu ddp_spawn")] == "ok"
    assert (out / "gpu_check.md").read_text() in proc.stdout
    assert "Traceback" not in proc.stderr
    assert list((out / "results" / "runs" / "embodiment1").glob("lbam__*.json"))  # the rows stay under OUT


def test_gpu_check_reports_each_failing_stage_as_a_line_and_exits_1(tmp_path):
    """Asked for CUDA on a machine without it: each stage fails (or is skipped) on its own line, none stops the
    others, and nothing is written outside OUT."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cuda", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--stages", "env,steps,ddp", "--attentions", "none,lbam"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    rows = json.loads((out / "gpu_check.json").read_text())
    failed = {(r["stage"], r["item"]) for r in rows if not r["ok"]}
    assert ("env", "stage") in failed and {
        ("steps", "cnn4 lbam compiled"),
        ("steps", "vgg16 none eager"),
    } <= failed
    assert next(r["result"] for r in rows if r["stage"] == "ddp") == "skipped"
    assert "Traceback" not in proc.stdout + proc.stderr
    bad = subprocess.run([*cmd, "--attentions", "lbam,foo"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "gpu_check.py: unknown --attentions ['foo']; valid: none,se,cbam,bam,eca,lbam"
    )


def test_gpu_checks_train_stage_uses_the_runners_precision_and_never_downloads(tmp_path, monkeypatch):
    """On the GPU no precision is forced (the runner's rule: bf16 where native, else fp16 with a scaler); a
    machine without the real BCCD trains the synthetic twin and says so, rather than download outside OUT."""
    import gpu_check

    from lbam.config import compose

    paths = [f"paths.results_dir={tmp_path}/r", f"paths.experiments_dir={tmp_path}/e"]
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "nothing"))
    overrides, note = gpu_check.train_overrides("cuda", paths)
    assert not any(o.startswith("trainer.precision") for o in overrides)
    assert "dataset=synthetic_bccd" in overrides and str(tmp_path / "nothing") in note
    assert compose(overrides).dataset.download is False
    (tmp_path / "real" / "BCCD" / "Annotations").mkdir(parents=True)
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "real"))
    overrides, note = gpu_check.train_overrides("cuda", paths)
    assert note is None and not any(o.startswith("dataset=") for o in overrides)


def test_gpu_check_keeps_the_stages_it_finished_when_stopped_part_way(tmp_path, monkeypatch):
    """A check stopped mid-stage (a lease running out, Ctrl-C) still leaves the table of the stages before it."""
    import tempfile

    import gpu_check

    for var in ("LBAM_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TMPDIR"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # main() points them under OUT: restored afterwards
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "stage_train", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--out", str(out), "--stages", "env,train"])
    rows = json.loads((out / "gpu_check.json").read_text())
    assert {r["stage"] for r in rows} == {"env"} and ("env", "stage time") in {
        (r["stage"], r["item"]) for r in rows
    }
    assert "| env | torch |" in (out / "gpu_check.md").read_text()


def test_gpu_checks_step_speeds_flag_a_model_whose_loss_went_non_finite(monkeypatch):
    """A step that trains to NaN (as compiled bf16 CBAM once did on an H200) is a failed line, not a speed."""
    import gpu_check

    import lbam.bench.step

    def fake_make_step(attention, *args, **kwargs):
        value = float("nan") if attention == "cbam" else 1.0
        return (lambda: torch.tensor(value)), 0.0

    monkeypatch.setattr(lbam.bench.step, "make_step", fake_make_step)
    t = gpu_check.Table()
    gpu_check.stage_steps(t, "cpu", ("none", "cbam"))
    by = {r["item"]: r for r in t.rows}
    assert set(by) == {
        f"{b} {a} eager" for b in ("cnn4", "vgg16") for a in ("none", "cbam")
    }  # the ones asked
    assert by["cnn4 cbam eager"]["result"] == "non-finite loss" and not by["cnn4 cbam eager"]["ok"]
    assert by["cnn4 none eager"]["result"].endswith("img/s") and by["cnn4 none eager"]["ok"]
    assert t.failed


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
