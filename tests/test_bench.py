"""The benchmark harness: correct reference, correct measurements plumbing, CSVs with the stated columns."""

import csv
import shutil

import pytest
import torch
import torch.nn.functional as F

import lbam.bench.reference as reference
from lbam.attention import LBAM, _ext, _fused
from lbam.bench import main
from lbam.bench.common import interleaved_times, paired_ratio, paired_ratio_ci, saved_tensor_bytes
from lbam.bench.pipeline import loop_throughput


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: pytest -n 2 already fills both cores; two threads each would contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MACHINE_COLUMNS = [
    "machine",
    "threads",
    "gpu",
    "device",
    "torch_version",
    "date",
    "load_avg_1m",
    "commit",
    "cpp_kernel",
]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"shared_conv": False},
        {"pool": "max", "residual": False},
        {"pool": "avg", "kernel_size": 5},
        {"branches": "channel"},
        {"branches": "spatial"},
    ],
)
def test_reference_equals_lbam_in_output_and_gradients(kwargs):
    torch.manual_seed(0)
    module = LBAM(24, reduction=4, dilation=2, **kwargs)
    assert reference.check_reference(module, torch.randn(3, 24, 7, 5)) < 1e-9


def test_reference_check_catches_a_difference(monkeypatch):
    exact = reference.reference_lbam
    monkeypatch.setattr(reference, "reference_lbam", lambda m, x: exact(m, x) * (1 + 1e-6))
    with pytest.raises(AssertionError, match="output"):
        reference.check_reference(LBAM(16, reduction=4), torch.randn(2, 16, 6, 6))


def test_reference_module_shares_parameters_and_keeps_bn_statistics():
    module = LBAM(16, reduction=4)
    ref = reference.ReferenceLBAM(module)
    assert {id(p) for p in ref.parameters()} == {id(p) for p in module.parameters()}
    before = module.spatial[1].running_mean.clone()
    ref.train()(torch.randn(2, 16, 6, 6))
    assert torch.equal(module.spatial[1].running_mean, before)


def test_saved_tensor_bytes_counts_unique_saved_storages_except_excluded():
    x = torch.randn(4, 8, requires_grad=True)
    # sigmoid saves its output (128 B); x * x saves x twice (one storage), excluded here.
    assert saved_tensor_bytes(lambda: x.sigmoid(), exclude=[x]) == 4 * 8 * 4
    assert saved_tensor_bytes(lambda: x * x, exclude=[x]) == 0
    assert saved_tensor_bytes(lambda: x * x) == 4 * 8 * 4


def test_interleaved_times_runs_each_candidate_once_per_round():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def run():
            calls[name] += 1

        return run

    times = interleaved_times({"a": bump("a"), "b": bump("b")}, torch.device("cpu"), warmup=2, repeats=5)
    assert calls == {"a": 7, "b": 7}
    assert set(times) == {"a", "b"} and all(len(t) == 5 and min(t) > 0 for t in times.values())


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


def test_loop_throughput_counts_in_epoch_gaps_and_reports_epoch_boundaries_apart():
    # (epoch, end time, batch size): warm-up batch, then 1 s per batch, and a 3 s epoch boundary.
    ends = [(0, 0.0, 10), (0, 1.0, 10), (0, 2.0, 10), (1, 5.0, 10), (1, 6.0, 10)]
    in_epoch, boundary = loop_throughput(ends, warmup=1)
    assert in_epoch == pytest.approx(20 / 2.0)
    assert boundary == pytest.approx(3.0)
    # 2 s of that boundary were the bound segment, not the loop.
    assert loop_throughput(ends, warmup=1, excluded=[2.0])[1] == pytest.approx(1.0)


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_module_and_backbone_bench_write_csvs_with_positive_numbers(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--parts", "module,backbone", "--threads", "1"]) == 0
    rows = _read(tmp_path / "modules.csv")
    assert {r["attention"] for r in rows} == {
        "none",
        "se",
        "cbam",
        "bam",
        "eca",
        "lbam",
        "lbam_reference",
        "lbam_gap_only",
    }
    for col in [*MACHINE_COLUMNS, "batch", "channels", "height", "params", "macs", "flops", "fwd_ms"]:
        assert col in rows[0]
    for col in ("fwdbwd_over_bam", "fwdbwd_over_se", "mem_over_bam", "fwdbwd_over_lbam_reference"):
        assert col in rows[0]
    for r in rows:
        if r["attention"] != "none":
            lo, hi = float(r["fwdbwd_over_bam_ci_lo"]), float(r["fwdbwd_over_bam_ci_hi"])
            assert 0 < lo <= float(r["fwdbwd_over_bam"]) <= hi
    by = {r["attention"]: r for r in rows}
    for name in ("se", "bam", "lbam", "lbam_reference"):
        r = by[name]
        assert int(r["params"]) > 0 and int(r["macs"]) >= 0 and int(r["flops"]) > 0
        assert float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0 and int(r["act_bytes"]) > 0
    # The reference is the same function with the same parameters: same counts.
    assert by["lbam_reference"]["params"] == by["lbam"]["params"]
    # The GMP-free ablation has the same parameters (shared 1-D conv) and pools one vector instead of two.
    assert by["lbam_gap_only"]["params"] == by["lbam"]["params"]
    assert int(by["lbam_gap_only"]["flops"]) < int(by["lbam"]["flops"])
    assert float(by["bam"]["fwdbwd_over_bam"]) == 1.0
    assert int(by["none"]["params"]) == 0 and int(by["none"]["act_bytes"]) == 0
    assert (tmp_path / "modules.png").stat().st_size > 0
    backbones = _read(tmp_path / "backbones.csv")
    assert {r["attention"] for r in backbones} == {"none", "se", "cbam", "bam", "eca", "lbam"}
    for r in backbones:
        assert all(r[c] for c in MACHINE_COLUMNS)
        assert int(r["params"]) > 0 and int(r["macs"]) > 0 and float(r["latency_ms_per_image"]) > 0
        assert (int(r["attention_params"]) > 0) == (r["attention"] != "none")


@pytest.mark.slow
def test_quick_pipeline_bench_trains_through_the_runner_and_reports_both_throughputs(tmp_path):
    assert main(["--quick", "--out", str(tmp_path), "--parts", "pipeline", "--threads", "1"]) == 0
    (row,) = _read(tmp_path / "pipeline.csv")
    assert row["dataset"] == "synthetic_bccd" and row["synthetic"] == "True"
    for col in ("loop_images_per_s", "bound_images_per_s", "loop_over_bound", "epoch_boundary_s"):
        assert float(row[col]) > 0
    assert int(row["batches_per_epoch"]) > 1 and int(row["batch"]) == 8


def test_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--parts", "module,gpu"])
    assert "unknown part" in capsys.readouterr().err


# ---- the fused tails in lbam.attention._fused (the optimisation the bench measures) ----


def _f64(*shape, grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("residual", [True, False])
def test_fused_gate_gradcheck(residual):
    x, c, s = _f64(2, 3, 4, 5), _f64(2, 3, 1, 1), _f64(2, 1, 4, 5)
    assert torch.autograd.gradcheck(lambda *t: _fused.gate(*t, residual), (x, c, s))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize(("pool", "n_in"), [("avgmax", 1), ("avgmax", 2), ("avg", 1), ("max", 1)])
def test_fused_lbam_gate_gradcheck(pool, n_in, residual):
    x, s, w = _f64(2, 6, 3, 4), _f64(2, 1, 3, 4), _f64(1, n_in, 3)
    assert torch.autograd.gradcheck(lambda *t: _fused.lbam_gate(*t, pool, residual), (x, s, w))


def test_fused_gates_keep_no_full_size_tensor_for_backward():
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    c, s = torch.randn(2, 16, 1, 1, requires_grad=True), torch.randn(2, 1, 8, 8, requires_grad=True)
    w = torch.randn(1, 1, 3, requires_grad=True)
    full = x.numel() * 4
    # Eager: σ(c + s) is kept at full size.
    assert saved_tensor_bytes(lambda: x + x * torch.sigmoid(c + s), exclude=[x]) >= full
    assert saved_tensor_bytes(lambda: _fused.gate(x, c, s), exclude=[x]) < full / 4
    assert saved_tensor_bytes(lambda: _fused.lbam_gate(x, s, w), exclude=[x]) < full / 4


def test_global_avg_pool_equals_mean_and_returns_a_broadcast_gradient():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    torch.testing.assert_close(_fused.global_avg_pool(x), x.mean((2, 3)), rtol=0, atol=0)
    g = torch.randn(2, 3)
    (ours,) = torch.autograd.grad(_fused.global_avg_pool(x), x, g)
    (theirs,) = torch.autograd.grad(x.mean((2, 3)), x, g)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # The point of it: the gradient is a stride-0 view (autograd adds it in place), not a full-size tensor.
    assert ours.stride()[2:] == (0, 0)
    x64 = _f64(2, 3, 4, 5)
    assert torch.autograd.gradcheck(_fused.global_avg_pool, (x64,))
    assert torch.autograd.gradgradcheck(_fused.global_avg_pool, (x64,))


@pytest.mark.parametrize(("n_in", "k"), [(1, 1), (1, 3), (2, 5)])
def test_conv1d_helper_equals_f_conv1d_and_is_counted(n_in, k):
    from torch.utils.flop_counter import FlopCounterMode

    v, w = torch.randn(3, n_in, 17), torch.randn(1, n_in, k)
    torch.testing.assert_close(_fused._conv1d(v, w), F.conv1d(v, w, padding=k // 2))
    # A dispatch mode gets the plain conv, so lbam.complexity can count it (3 images × 17 outputs × n_in·k).
    with FlopCounterMode(display=False) as counter:
        _fused._conv1d(v, w)
    assert counter.get_total_flops() == 2 * 3 * 17 * n_in * k


@pytest.fixture(scope="module")
def ext_ops():
    """torch.ops.lbam (the C++ pooling kernel); skips only where no compiler could build it."""
    if _ext.disabled():
        pytest.skip(f"{_ext.DISABLE_ENV} is set")
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja: LBAM uses the PyTorch path")
    ops = _ext.cpu_ops()
    assert ops is not None, "a compiler is present but the C++ pooling kernel did not build (see the warning)"
    return ops


def _tied_maps(dtype, hw):
    """Post-ReLU-like maps with ties at the maximum, a -inf map and a NaN map."""
    x = torch.relu(torch.randn(2, 6, *hw, dtype=dtype))
    x[0, 1] = 0.0  # every value ties
    x[1, 2].view(-1)[:3] = x[1, 3].view(-1)[-1] = x[1, 3].view(-1)[0] = 9.0  # ties near and far apart
    x[1, 3].clamp_(max=9.0)
    x[1, 2].clamp_(max=9.0)
    x[0, 4] = float("-inf")
    x[0, 5].view(-1)[-1] = float("nan")
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(56, 56), (7, 7), (5, 3), (1, 1), (4, 8)])  # with and without a scalar tail
def test_cpp_pooling_kernel_equals_mean_amax_and_amax_gradient(ext_ops, dtype, hw):
    x = _tied_maps(dtype, hw)
    avg, mx, where = ext_ops.pool_avgmax(x)
    torch.testing.assert_close(avg, x.mean((2, 3)), equal_nan=True)
    torch.testing.assert_close(mx, x.amax((2, 3)), rtol=0, atol=0, equal_nan=True)
    # where: the position of a unique maximum, -1 when it is tied, -2 for a NaN map (one int32 per map).
    flat = x.flatten(2)
    hits = flat == mx[..., None]
    unique = hits.sum(2) == 1
    position = torch.where(hits, torch.arange(flat.shape[2]), -1).amax(2)
    expected = torch.where(unique, position, torch.where(mx.isnan(), -2, -1))
    assert where.dtype == torch.int32 and torch.equal(where, expected.int())
    assert (unique.any() and (~unique & ~mx.isnan()).any()) or hits.shape[2] == 1
    # The gradient: added to dx in place, split among ties, NaN over a NaN map (as amax's backward).
    d_max = torch.randn(mx.shape, dtype=dtype)
    base = torch.randn(x.shape, dtype=dtype)
    dx = base.clone()
    ext_ops.add_max_grad_(dx, x, mx, where, d_max)
    xr = x.clone().requires_grad_()
    (theirs,) = torch.autograd.grad(xr.amax((2, 3)), xr, d_max)
    torch.testing.assert_close(dx, base + theirs, equal_nan=True)


@pytest.fixture(
    params=[((48, 48), "dense"), ((4, 4), "dense"), ((48, 48), "ext"), ((5, 3), "ext")],
    ids=lambda p: f"{p[1]}-{p[0][0]}x{p[0][1]}",
)
def tied_on_path(request, monkeypatch):
    """Finite float64 maps with tied maxima that ``_fused._pool`` sends down the given GMP path."""
    hw, path = request.param
    if path == "ext":
        request.getfixturevalue("ext_ops")
    else:
        monkeypatch.setenv(_ext.DISABLE_ENV, "1")
    x = _tied_maps(torch.float64, hw)[:, :4].contiguous()  # without the -inf and NaN maps
    assert _fused._pool(x, "avgmax")[2][0] == path
    return x


def test_fused_lbam_gate_max_gradient_paths_equal_amax_with_ties(tied_on_path):
    # Post-ReLU features have ties at the maximum; every path must split its gradient as amax does.
    x, hw = tied_on_path, tied_on_path.shape[2:]
    s, w = torch.randn(2, 1, *hw, dtype=torch.float64), torch.randn(1, 1, 3, dtype=torch.float64)
    g = torch.randn(x.shape, dtype=torch.float64)
    grads = []
    for fused in (True, False):
        xi, si, wi = (t.clone().requires_grad_() for t in (x, s, w))
        if fused:
            out = _fused.lbam_gate(xi, si, wi)
        else:
            v = (xi.mean((2, 3)) + xi.amax((2, 3))).unsqueeze(1)
            out = xi + xi * torch.sigmoid(F.conv1d(v, wi, padding=1).view(2, 4, 1, 1) + si)
        out.backward(g)
        grads.append((out.detach(), xi.grad, si.grad, wi.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_global_avg_max_pool_equals_mean_and_amax_with_their_gradients(tied_on_path):
    # CBAM's channel pooling goes through the same paths as LBAM's.
    x = tied_on_path
    d_avg, d_max = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    xi, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = _fused.global_avg_max_pool(xi), (xr.mean((2, 3)), xr.amax((2, 3)))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    torch.autograd.backward(ours, (d_avg, d_max))
    torch.autograd.backward(theirs, (d_avg, d_max))
    torch.testing.assert_close(xi.grad, xr.grad)
    assert torch.autograd.gradcheck(_fused.global_avg_max_pool, (_f64(2, 3, *x.shape[2:]),))


@pytest.mark.parametrize("kwargs", [{}, {"pool": "max"}, {"shared_conv": False}, {"residual": False}])
def test_lbam_with_and_without_the_cpp_kernel_agree(ext_ops, kwargs, monkeypatch):
    torch.manual_seed(0)
    m = LBAM(16, **kwargs)
    x, g = torch.randn(3, 16, 20, 20), torch.randn(3, 16, 20, 20)
    results = []
    for disable in ("0", "1"):
        monkeypatch.setenv(_ext.DISABLE_ENV, disable)
        assert (_fused._ext_ops(x) is None) == (disable == "1")
        m.zero_grad()
        xi = x.clone().requires_grad_()
        out = m(xi)
        out.backward(g)
        results.append([out.detach(), xi.grad] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
