"""scripts/device_check.py (`make device-check`): refused without a GPU unless on the CPU, every stage at toy sizes on
the CPU, a failing or unfinished stage as a line, and the pieces it measures with (the pool's schedule, peak
memory, the step profile)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import device_check  # noqa: E402
import device_stages  # noqa: E402
from pool import simulate, units  # noqa: E402
from sweep_plan import plan  # noqa: E402

CHECK = [sys.executable, str(ROOT / "scripts" / "device_check.py")]


@pytest.fixture
def restore_env(monkeypatch):
    """main() points the caches and TMPDIR under OUT: restored afterwards."""
    for var in (
        "LBAM_CACHE_DIR",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "TMPDIR",
        "PYTHONUNBUFFERED",
    ):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("args", [[], ["--device", "cuda"]])
def test_without_a_gpu_it_fails_in_one_line_unless_on_the_cpu(tmp_path, args):
    proc = subprocess.run(
        [*CHECK, "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no CUDA device here" in proc.stderr and "make device-check DEVICE=cpu" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written: it did not quietly check the CPU instead


def test_bad_options_are_one_line():
    bad = subprocess.run([*CHECK, "--attentions", "lbam,foo"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "device_check.py: unknown --attentions ['foo']; valid: none,se,cbam,bam,eca,lbam"
    )


@pytest.mark.slow
def test_on_the_cpu_every_stage_runs_at_toy_sizes(tmp_path):
    """`make device-check DEVICE=cpu`: the stages a GPU runs, at toy sizes (about 2.5 min on 2 loaded cores)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        # No time budget here (it fits a GPU lease): a loaded CI machine must not turn a slow stage into a failure.
        [*CHECK, "--device", "cpu", "--out", str(out), "--budget-s", "1200"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    rows = json.loads((out / "device_check.json").read_text())
    assert proc.returncode == 0, [r for r in rows if not r["ok"]] or proc.stderr[-3000:]
    by = {(r["stage"], r["item"]): r for r in rows}
    assert by[("env", "CUDA / driver / bf16 native")]["result"] == "none"
    assert (
        by[("e2", "1 job: lbam")]["result"].endswith("img/s")
        and "peak RSS" in by[("e2", "1 job: lbam")]["detail"]
    )
    assert by[("e2", "2 jobs at once")]["detail"].startswith("2/2 ok")
    e1 = by[("e1", "embodiment1: 7/7 runs ok")]  # every setting at seed 0, one pool
    assert (
        "jobs: 1 at once (auto on the CPU" in e1["detail"]
        and "pool: 7 runs one after the other" in e1["detail"]
    )
    assert by[("projection", "make reproduce")]["result"].endswith("min projected")
    assert {item for stage, item in by if stage == "steps" and item != "stage time"} == {
        f"cnn4 none {mode}" for mode in ("eager", "inductor", "CUDA graphs")
    }
    assert by[("ddp", "2 x cpu ddp_spawn")]["result"] == "skipped"
    assert (out / "device_check.md").read_text() in proc.stdout and "Traceback" not in proc.stderr
    assert (
        len(list((out / "e1" / "results" / "runs" / "embodiment1").glob("*.json"))) == 7
    )  # rows stay in OUT
    e2_rows = [json.loads(p.read_text()) for p in (out / "e2" / "results").rglob("*.json")]
    assert {r["concurrent_jobs"] for r in e2_rows} == {1, 2}  # alone, then two at once


def test_a_stage_that_fails_or_has_no_time_left_is_a_line_and_the_exit_is_1(tmp_path, restore_env):
    out = tmp_path / "out"
    code = device_check.main(["--device", "cpu", "--out", str(out), "--stages", "env,projection"])
    rows = json.loads((out / "device_check.json").read_text())
    assert code == 1 and ("env", "torch") in {(r["stage"], r["item"]) for r in rows}
    (line,) = [r for r in rows if r["stage"] == "projection" and r["item"] == "make reproduce"]
    assert line["result"] == "not projected" and not line["ok"]  # it needs the e1 and e2 runs
    code = device_check.main(["--device", "cpu", "--out", str(out), "--stages", "env,e1", "--budget-s", "1"])
    rows = json.loads((out / "device_check.json").read_text())
    assert code == 1 and {"stage": "e1", "item": "stage", "result": "not run", "detail": "the 1 s budget is spent",
                          "ok": False} in rows  # fmt: skip


def test_it_keeps_the_stages_it_finished_when_stopped_part_way(tmp_path, monkeypatch, restore_env):
    """A check stopped mid-stage (a lease running out, Ctrl-C) still leaves the table of the stages before it."""

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(device_stages.STAGE_RUNNERS, "e2", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        device_check.main(["--device", "cpu", "--out", str(out), "--stages", "env,e2"])
    rows = json.loads((out / "device_check.json").read_text())
    assert {r["stage"] for r in rows} == {"env"} and ("env", "stage time") in {
        (r["stage"], r["item"]) for r in rows
    }
    assert "| env | torch |" in (out / "device_check.md").read_text()


def test_the_step_table_flags_a_model_whose_loss_went_non_finite(monkeypatch, tmp_path):
    """A step that trains to NaN (as compiled bf16 CBAM once did on an H200) is a failed line, not a speed."""
    import lbam.bench.step

    def fake_make_step(attention, *args, **kwargs):
        value = float("nan") if attention == "cbam" else 1.0
        return (lambda: torch.tensor(value)), 0.0

    monkeypatch.setattr(lbam.bench.step, "make_step", fake_make_step)
    c = device_check.Check("cpu", tmp_path, device_check.Table(), float("inf"), ("none", "cbam"))
    device_stages.stage_steps(c)
    by = {r["item"]: r for r in c.table.rows}
    modes = ("eager", "inductor", "CUDA graphs")
    assert set(by) == {f"cnn4 {a} {m}" for a in ("none", "cbam") for m in modes}  # the ones asked
    assert by["cnn4 cbam eager"]["result"] == "non-finite loss" and not by["cnn4 cbam eager"]["ok"]
    assert by["cnn4 none inductor"]["result"].endswith("img/s") and by["cnn4 none inductor"]["ok"]
    assert "GPU busy n/a (CPU)" in by["cnn4 none eager"]["detail"] and c.table.failed


def test_embodiment_1_trains_the_real_bccd_or_says_why_not(tmp_path, monkeypatch):
    """On a GPU without the real BCCD, the synthetic twin at the same sizes, with a failed line that says where
    it looked (nothing downloaded outside OUT); with it, `make reproduce`'s own command."""
    c = device_check.Check("cuda", tmp_path, device_check.Table(), float("inf"), ("none",))
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "nothing"))
    cmd, note = device_stages.e1_command(c)
    assert "dataset=synthetic_bccd" in cmd and str(tmp_path / "nothing") in note
    (tmp_path / "real" / "BCCD" / "Annotations").mkdir(parents=True)
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "real"))
    cmd, note = device_stages.e1_command(c)
    assert note is None and not any(o.startswith("dataset=") for o in cmd)
    assert cmd[2:5] == ["--experiments", "embodiment1", "--no-report"] and "--jobs" not in cmd  # JOBS=auto


def test_the_projection_follows_the_pools_schedule(tmp_path):
    """9 at once: the 7 first runs, then the 14 others in two waves once their model's first run has ended."""
    p = plan(
        "embodiment1",
        [f"paths.results_dir={tmp_path}/r", f"paths.experiments_dir={tmp_path}/e"],
        check_data=False,
    )
    pool = units(p, 9, compiled=True)
    assert simulate(pool, 9, lambda u: 60.0 if u.first else 40.0) == 60 + 40 + 40
    assert simulate(pool, 21, lambda u: 60.0 if u.first else 40.0) == 60 + 40  # the others all at once
    assert simulate(units(p, 1, compiled=True), 1, lambda u: 10.0 * len(u.jobs)) == 210  # one after the other
