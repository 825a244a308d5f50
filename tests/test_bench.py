"""The benchmark harness: timing and ratio plumbing, memory accounting, the CSVs and the generated README."""

import csv
import subprocess
import sys

import pytest
import torch

from lbam.bench import main
from lbam.bench.common import (
    REPO_ROOT,
    interleaved_times,
    paired_ratio,
    paired_ratio_ci,
    saved_tensor_bytes,
    write_csv,
)
from lbam.bench.processes import PeakMemory, run_logged
from lbam.bench.readme import TARGET, WHY_LBAM_SLOWER, write_readme
from lbam.bench.step import profile_step
from lbam.complexity import profile_model

MACHINE_COLUMNS = ["machine", "threads", "gpu", "torch_version", "date", "commit", "load_avg_1m"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: pytest -n 2 already fills both cores; two threads each would contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_profile_step_times_a_step_and_leaves_gpu_figures_to_the_gpu():
    calls = []
    timed = profile_step(lambda: calls.append(1), 5, torch.device("cpu"))
    assert (
        len(calls) == 5 and timed["wall_ms"] >= 0 and timed["busy_ms"] is None and timed["peak_gib"] is None
    )


def test_peak_memory_sees_each_child_process_on_the_cpu(tmp_path):
    """The check's per-process memory on the CPU: /proc, this process's descendants (here one holding 200 MB)."""
    import subprocess
    import sys

    hold = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    with PeakMemory(cuda=False) as memory:
        subprocess.run([sys.executable, "-c", hold], check=True)
    assert max(memory.peaks.values()) > 0.19 and "peak RSS" in memory.summary()


def test_run_logged_stops_a_process_group_at_its_timeout(tmp_path):
    """A check's stage stopped at its budget leaves no process behind (a run left over would hold the GPU)."""
    import os
    import sys

    pid = tmp_path / "grandchild"
    child = (
        "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid)!r}, 'w').write(str(g.pid)); time.sleep(60)"
    )
    code, wall = run_logged([sys.executable, "-c", child], tmp_path / "log", 3.0, tmp_path)
    assert code is None and wall < 20  # stopped at its timeout, not after a minute
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid.read_text()), 0)  # the grandchild too: the whole group


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_saved_tensor_bytes_counts_unique_saved_storages_except_excluded():
    x = torch.randn(4, 8, requires_grad=True)
    # sigmoid saves its output (128 B); x * x saves x twice (one storage), excluded here.
    assert saved_tensor_bytes(lambda: x.sigmoid(), exclude=[x]) == 4 * 8 * 4
    assert saved_tensor_bytes(lambda: x * x, exclude=[x]) == 0
    assert saved_tensor_bytes(lambda: x * x) == 4 * 8 * 4


def test_interleaved_times_calls_each_candidate_the_same_number_of_times_per_round():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def run():
            calls[name] += 1

        return run

    times = interleaved_times({"a": bump("a"), "b": bump("b")}, rounds=5, min_s=0.0)
    # A calibration figure, then one per round; each figure is one call after Timer.timeit's 2 warm-up calls.
    assert calls == {"a": 6 * 3, "b": 6 * 3}
    assert set(times) == {"a", "b"} and all(len(t) == 5 and min(t) > 0 for t in times.values())
    # min_s sets how many calls one figure averages: a ~free call is repeated, each round alike.
    calls.update(a=0, b=0)
    # 50 ms a figure: a ~µs call is repeated many times even on a loaded machine (one call would need > 25 ms
    # for fewer than 2); n = 3 calibration calls + 3 rounds x (number + 2 warm-up calls).
    interleaved_times({"a": bump("a"), "b": bump("b")}, rounds=3, min_s=0.05)
    assert all(n > 3 + 3 * (2 + 2) and (n - 3) % 3 == 0 for n in calls.values())  # the same count per round


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 3 is slow for both: its pair still has ratio 2, unlike the ratio of medians (3/1.5).
    assert paired_ratio([2.0, 2.0, 20.0], [1.0, 1.0, 10.0]) == 2.0
    assert paired_ratio([1.0, 3.0, 2.0], [1.0, 1.0, 1.0]) == 2.0


def test_paired_ratio_ci_brackets_the_median_with_order_statistics():
    b = [1.0] * 41
    a = [1.0 + i / 100 for i in range(41)]  # ratios 1.00 … 1.40, median 1.20
    lo, hi = paired_ratio_ci(a, b)
    assert (lo, hi) == (1.13, 1.27)  # the 14th and 28th of 41 sorted ratios
    assert lo <= paired_ratio(a, b) <= hi
    # Three rounds cannot bound anything tighter than their extremes.
    assert paired_ratio_ci([1.0, 3.0, 2.0], [1.0, 1.0, 1.0]) == (1.0, 3.0)


def test_write_csv_keeps_column_order_ints_and_blanks_and_rounds_floats(tmp_path):
    rows = [{"b": 1, "a": 0.123456, "c": ""}, {"b": 22, "a": 123456.7, "c": 3.0}]
    path = write_csv(tmp_path / "x.csv", rows)
    assert path.read_text() == "b,a,c\n1,0.1235,\n22,1.235e+05,3\n"


def test_unknown_part_and_a_non_checkout_are_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--parts", "modules,gpu"])
    assert "unknown part" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--against", str(tmp_path)])
    assert "not a checkout of this project" in capsys.readouterr().err


# ---- the generated README: its verdicts follow the numbers ----

INFO = {
    "machine": "cpu (2 cores)",
    "threads": 2,
    "gpu": "none",
    "torch_version": "2",
    "date": "d",
    "commit": "c0ffee",
}


def _module_rows(lbam_over_bam: dict[int, float]):
    rows = []
    for size, ratio in lbam_over_bam.items():
        for name in ("bam", "lbam"):
            for mode in ("eager", "compiled"):
                r = ratio if (name, mode) == ("lbam", "compiled") else 1.0
                rows.append(
                    INFO
                    | {
                        "load_avg_1m": 1.0,
                        "batch": 8,
                        "channels": 64,
                        "size": size,
                        "attention": name,
                        "mode": mode,
                    }
                    | {"params": 10, "macs": 1, "flops": 5, "fwdbwd_ms": 2.0 * r, "fwdbwd_over_bam": r}
                    | {"ci_lo": r - 0.1, "ci_hi": r + 0.1, "over_eager": 1.0, "act_bytes": 100}
                )
    return rows


def test_readme_states_target_b_from_the_numbers(tmp_path):
    write_csv(tmp_path / "modules.csv", _module_rows({56: 1.02, 14: 1.3}))
    text = write_readme(tmp_path).read_text()
    assert (
        f"compiled LBAM ≤ {TARGET} × compiled BAM at every size: missed at 1 of 2 sizes (C=64 14×14: 1.30)"
        in text
    )
    assert WHY_LBAM_SLOWER in text and "load average 1.00–1.00" in text
    write_csv(tmp_path / "modules.csv", _module_rows({56: 1.02, 14: 1.1}))
    text = write_readme(tmp_path).read_text()
    assert "met at every size; range 1.02–1.10 (medians; the ~95 % intervals reach 1.20" in text
    assert WHY_LBAM_SLOWER not in text


def test_readme_states_target_a_from_paired_rounds(tmp_path):
    rows = []
    for r, (old, new, compiled) in enumerate([(100, 90, 120), (50, 45, 60), (100, 95, 130)]):
        for side, ips in (("old", old), ("new", new), ("new_compiled", compiled)):
            mode = "compiled" if side == "new_compiled" else "eager"
            rows.append(
                INFO
                | {"load_avg_1m": 0.5, "size": "quick", "round": r, "side": side, "side_commit": side}
                | {"mode": mode, "images_per_s": ips, "step_ms": 1.0, "first_step_s": 1.0}
            )
    write_csv(tmp_path / "against.csv", rows)
    text = write_readme(tmp_path).read_text()
    # Per-round ratios 1.2, 1.2, 1.3: median 1.2 ≥ 1.15.
    assert "quick: met (1.20×)" in text and "3 rounds" in text


# ---- the real thing, tiny ----


@pytest.mark.slow
def test_quick_bench_writes_csvs_and_readme(tmp_path):
    # aot_eager: the bench's plumbing with dynamo's graphs, without inductor's minutes of C++ code generation
    # (inductor runs end to end in test_attention, test_models, test_runner and the device check).
    assert main(["--quick", "--out", str(tmp_path), "--threads", "1", "--backend", "aot_eager"]) == 0
    rows = _read(tmp_path / "modules.csv")
    kinds = {(r["attention"], r["mode"]) for r in rows}
    assert kinds == {(n, "eager") for n in ("se", "cbam", "bam", "eca", "lbam")} | {
        ("bam", "compiled"),
        ("lbam", "compiled"),
    }
    from lbam.attention import build_attention

    for r in rows:
        assert all(r[c] for c in MACHINE_COLUMNS) and r["compile_backend"] == "aot_eager"
        probe = build_attention(r["attention"], int(r["channels"]))
        cost = profile_model(probe, (1, int(r["channels"]), int(r["size"]), int(r["size"])))
        assert (int(r["params"]), int(r["macs"]), int(r["flops"])) == (
            cost["params"],
            cost["macs"],
            cost["flops"],
        )
        assert float(r["fwdbwd_ms"]) > 0 and int(r["act_bytes"]) > 0
        assert 0 < float(r["ci_lo"]) <= float(r["fwdbwd_over_bam"]) <= float(r["ci_hi"])
        if r["attention"] == "bam":
            assert float(r["fwdbwd_over_bam"]) == 1.0
    steps = _read(tmp_path / "step.csv")
    assert {(r["attention"], r["mode"]) for r in steps} == {("lbam", "eager"), ("lbam", "compiled")}
    assert all(float(r["images_per_s"]) > 0 for r in steps)
    assert float(next(r for r in steps if r["mode"] == "compiled")["compile_s"]) > 0
    text = (tmp_path / "README.md").read_text()
    assert "## Attention modules" in text and "## cnn4 training step" in text and "Target (b)" in text
    assert "torch.compile(backend='aot_eager')" in text


@pytest.mark.slow
def test_against_alternates_processes_of_two_checkouts(tmp_path):
    """This checkout against itself: the plumbing (processes, sides, rounds, README section)."""
    args = [
        "--quick",
        "--out",
        str(tmp_path),
        "--parts",
        "modules",
        "--threads",
        "1",
        "--backend",
        "aot_eager",
    ]
    assert main([*args, "--against", str(REPO_ROOT), "--against-rounds", "2"]) == 0
    rows = _read(tmp_path / "against.csv")
    assert sorted((r["round"], r["side"]) for r in rows) == sorted(
        (str(i), s) for i in range(2) for s in ("old", "new", "new_compiled")
    )
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert "Target (a)" in (tmp_path / "README.md").read_text()


def test_a_users_benchmark_lands_beside_the_committed_one(tmp_path):
    """By default the benchmark writes results/local/bench (git-ignored); only --reference writes results/bench."""
    from lbam import paths
    from lbam.bench import parse_args

    assert parse_args([]).out == paths.results_dir() / "bench"
    assert parse_args(["--reference"]).out == paths.reference_dir() / "bench"
    assert parse_args(["--out", str(tmp_path)]).out == tmp_path
    ignored = subprocess.run(["git", "check-ignore", "-q", str(paths.results_dir() / "bench" / "step.csv")])
    assert ignored.returncode == 0, "results/local/bench must be git-ignored"
    with pytest.raises(SystemExit):
        parse_args(["--reference", "--out", str(tmp_path)])
    both = subprocess.run(
        [sys.executable, "-m", "lbam.bench", "--reference", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2 and len(both.stderr.splitlines()) == 1 and "exclude" in both.stderr
