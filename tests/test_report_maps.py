"""Attention maps: checkpoints only from inside the experiments folder and never unpickled, a missing
checkpoint is one line, the map M recovered by hooks is the module's own, and the figure is drawn from a real
cnn4."""

import pickle
import types
from pathlib import Path

import pytest
import torch
from report_rows import declare, vouch
from torch import nn

from lbam.checkpoint import DIGEST, weights_digest
from lbam.models import build_backbone
from lbam.report import main, maps
from lbam.report.rows import ReportError, load_results
from lbam.results import Row, load_row, write_row

CLASSES = ["WBC", "RBC", "Platelets"]
N = 12
KWARGS = {"name": "cnn4", "num_classes": 3, "width_mult": 0.25}


@pytest.fixture(autouse=True)
def sweeps(monkeypatch):
    """The maps are drawn from official runs: "exp" declares the sweep of these rows."""
    declare(monkeypatch, "exp", {"attention": "lbam,bam", "seed": "0"})


def put(results: Path, attention: str, checkpoint: str | None, datamodule=None) -> Path:
    ids, targets = [f"img{i}#0" for i in range(N)], [i % 3 for i in range(N)]
    row = Row(
        experiment="exp", run_name=f"{attention}__seed0", profile="quick", seed=0, overrides=[], dataset="bccd",
        synthetic=False, backbone="cnn4", attention=attention, attention_kwargs={}, placement="stage",
        width_mult=0.25, image_size=32, status="ok", test_acc=1.0, test_balanced_acc=1.0, test_macro_f1=1.0,
        class_names=CLASSES, params=1, attention_params=1, macs=1, flops=1, n_train=10, n_test=N,
        train_seconds=1.0, checkpoint=checkpoint, device="cpu (2 threads, Test CPU)",
        datamodule={"_target_": "lbam.data.BCCDDataModule"} if datamodule is None else datamodule,
    )  # fmt: skip
    return write_row(vouch(row), list(zip(ids, targets, targets)), results)


def save_checkpoint(path: Path, attention: str, row: Path | None = None) -> None:
    """A checkpoint as the runner writes it: weights, hyper-parameters, its run's identity (that of the row
    file ``row``) and the digest of its weights."""
    torch.manual_seed(0)
    model = build_backbone(**KWARGS, attention=attention)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"hyper_parameters": {"model_kwargs": {**KWARGS, "attention": attention}}, "state_dict": state}
    if row is not None:
        r = load_row(row)
        ckpt["lbam_identity"] = {
            "run_name": r.run_name,
            "config_hash": r.config_hash,
            "split_hash": r.split_hash,
        }
        ckpt[DIGEST] = weights_digest(ckpt)
    torch.save(ckpt, path)


class Gate(nn.Module):
    """F' = F + F ⊗ M with M = gate(spatial(F) + GAP(F)), named as the attention modules name them."""

    def __init__(self):
        super().__init__()
        self.spatial, self.gate = nn.Conv2d(4, 1, 1), nn.Sigmoid()

    def forward(self, x):
        m = self.gate(self.spatial(x) + x.mean((2, 3), keepdim=True))
        self.m = m.detach()
        return x + x * m


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.gate = nn.Conv2d(3, 4, 3, padding=1), Gate()
        self.attention_modules = [self.gate]

    def forward(self, x):
        return self.gate(torch.relu(self.stem(x))).mean((2, 3))[:, :3]


def test_capture_gives_the_modules_own_maps_at_image_size():
    torch.manual_seed(0)
    net, images = Net().eval(), torch.randn(2, 3, 8, 8)
    out = maps.capture(net, images, net.gate)
    x = torch.relu(net.stem(images))
    assert torch.allclose(out["full"], net.gate.m.mean(1), atol=1e-6)  # same size: no resampling
    assert torch.allclose(out["spatial"], torch.sigmoid(net.gate.spatial(x))[:, 0], atol=1e-6)
    assert torch.equal(out["pred"], net(images).argmax(1))


def test_maps_are_skipped_without_a_checkpoint(tmp_path, capsys):
    put(tmp_path, "lbam", "runs/lbam/last.ckpt")
    put(tmp_path, "bam", None)
    assert maps.attention_maps(load_results(tmp_path), "exp", tmp_path / "experiments") is None
    assert "attention maps of exp skipped" in capsys.readouterr().out
    assert main(["attention-maps", "--experiment", "exp", "--results-dir", str(tmp_path)]) == 0


@pytest.mark.parametrize("where", ["../outside.ckpt", "/etc/passwd"])
def test_a_checkpoint_outside_the_experiments_dir_is_refused(tmp_path, capsys, where):
    (tmp_path / "outside.ckpt").write_bytes(b"x")
    put(tmp_path, "lbam", where)
    put(tmp_path, "bam", where)
    args = ["--experiment", "exp", "--results-dir", tmp_path, "--experiments-dir", tmp_path / "experiments"]
    rc = main(["attention-maps", *map(str, args)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.startswith("lbam.report: error:") and "outside" in err and "lbam__seed0.json" in err


class Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["zip", "legacy-pickle"])
def test_a_crafted_checkpoint_is_never_unpickled(tmp_path, fmt):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "experiments" / "evil.ckpt"
    ckpt.parent.mkdir()
    payload = {"hyper_parameters": {"model_kwargs": {}}, "state_dict": Payload(marker)}
    if fmt == "zip":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    put(tmp_path, "lbam", "evil.ckpt")
    put(tmp_path, "bam", "evil.ckpt")
    with pytest.raises(ReportError, match="cannot load the checkpoint"):
        maps.attention_maps(load_results(tmp_path), "exp", tmp_path / "experiments")
    assert not marker.exists()


@pytest.mark.parametrize("target", ["os.system", "lbam.report.main", "lbam.dataevil.X", "lbam.data.nope"])
def test_only_a_datamodule_of_lbam_data_is_built(tmp_path, target):
    """The row's _target_ is imported only from lbam.data, and only a LightningDataModule class is built."""
    put(tmp_path, "lbam", None, {"_target_": target, "command": "touch pwned"})
    run = load_results(tmp_path).runs[0]
    with pytest.raises(ReportError, match=r"not a LightningDataModule of lbam\.data"):
        maps.build_datamodule(run)


def test_attention_maps_figure_from_cnn4_checkpoints(tmp_path, monkeypatch, capsys):
    exp = tmp_path / "experiments"
    for att in ("lbam", "bam"):
        save_checkpoint(exp / att / "last.ckpt", att, put(tmp_path, att, f"{att}/last.ckpt"))
    torch.manual_seed(1)
    images, labels = torch.randn(N, 3, 32, 32), torch.arange(N) % 3
    batches = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    dm = types.SimpleNamespace(
        class_names=CLASSES,
        mean=[0.5] * 3,
        std=[0.2] * 3,
        test_dataloader=lambda: batches,
        transform=lambda b, train: b,
    )
    monkeypatch.setattr(maps, "build_datamodule", lambda run: dm)
    args = ["--experiment", "exp", "--results-dir", tmp_path, "--experiments-dir", exp]
    assert main(["attention-maps", *map(str, args)]) == 0
    out = tmp_path / "figures" / "exp_attention_maps.png"
    assert str(out) in capsys.readouterr().out and out.stat().st_size > 5000


@pytest.mark.parametrize("swap", ["another-seed", "bam-as-lbam", "nan-weights", "bit-rot", "no-identity"])
def test_a_checkpoint_that_is_not_the_rows_is_refused(tmp_path, capsys, swap):
    """The trial: the maps drew whatever checkpoint sat in the slot (another seed's, BAM weights under LBAM's name,
    NaN weights), each a figure and exit 0. They are checked as the runner checks them before resuming."""
    exp = tmp_path / "experiments"
    rows = {att: put(tmp_path, att, f"{att}/last.ckpt") for att in ("lbam", "bam")}
    save_checkpoint(exp / "bam" / "last.ckpt", "bam", rows["bam"])
    lbam = exp / "lbam" / "last.ckpt"
    save_checkpoint(lbam, "lbam", rows["lbam"])
    ckpt = torch.load(lbam, weights_only=True)
    if swap == "another-seed":
        ckpt["lbam_identity"]["run_name"] = "lbam__seed1"
    elif swap == "bam-as-lbam":
        ckpt = torch.load(exp / "bam" / "last.ckpt", weights_only=True)
    elif swap == "nan-weights":
        next(iter(ckpt["state_dict"].values())).fill_(float("nan"))
        ckpt[DIGEST] = weights_digest(ckpt)  # even resealed: NaN is never drawn
    elif swap == "bit-rot":
        next(iter(ckpt["state_dict"].values())).mul_(2)  # finite, plausible, not the saved weights
    else:
        del ckpt["lbam_identity"]
    torch.save(ckpt, lbam)
    args = ["--experiment", "exp", "--results-dir", tmp_path, "--experiments-dir", exp]
    assert main(["attention-maps", *map(str, args)]) == 1
    why = {
        "another-seed": "belongs to another run (run_name 'lbam__seed1' vs 'lbam__seed0')",
        "bam-as-lbam": "belongs to another run (run_name 'bam__seed0' vs 'lbam__seed0')",
        "nan-weights": "holds NaN or infinite values in 1 tensor(s), e.g. state_dict/model.",
        "bit-rot": "holds other weights than it was saved with",
        "no-identity": "belongs to another run (run_name None vs 'lbam__seed0'",
    }[swap]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{lbam}: refusing to draw it as run lbam__seed0" in err and why in err, (
        err
    )
    assert not (tmp_path / "figures").exists()


def test_an_unknown_experiment_is_an_error(tmp_path, capsys):
    put(tmp_path, "lbam", None)
    assert main(["attention-maps", "--experiment", "nosuch", "--results-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"lbam.report: error: no official runs of experiment 'nosuch' in {tmp_path} (experiments: exp)"
    )


def test_a_row_without_datamodule_is_one_line(tmp_path):
    put(tmp_path, "lbam", None, {})
    with pytest.raises(ReportError, match="records no datamodule"):
        maps.build_datamodule(load_results(tmp_path).runs[0])


def test_attention_maps_needs_an_experiment(tmp_path, capsys):
    put(tmp_path, "lbam", None)
    assert main(["attention-maps", "--results-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "lbam.report: error: attention-maps needs --experiment NAME"


class CoarseNet(Net):
    """The gate sees a 4×4 map of an 8×8 image (stride-2 stem)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)


def test_capture_upsamples_by_nearest_neighbour():
    """Each map cell becomes a 2×2 block of the same value: nothing smoothed, no value invented."""
    torch.manual_seed(0)
    net, images = CoarseNet().eval(), torch.randn(2, 3, 8, 8)
    out = maps.capture(net, images, net.gate)
    native = net.gate.m.mean(1)  # 2×4×4
    assert out["hw"].tolist() == [4, 4] and out["full"].shape == (2, 8, 8)
    assert torch.equal(out["full"], native.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_maps_come_from_the_first_module_on_one_colour_scale(tmp_path, monkeypatch):
    torch.manual_seed(0)
    models = {
        "LBAM": build_backbone(**KWARGS, attention="lbam"),
        "BAM": build_backbone(**KWARGS, attention="bam"),
    }
    models = {k: m.eval() for k, m in models.items()}
    used, figures = [], []
    real = maps.capture
    monkeypatch.setattr(maps, "capture", lambda m, x, module: used.append(module) or real(m, x, module))
    monkeypatch.setattr(maps.plt, "close", figures.append)  # keep the figure to inspect it
    images, labels = torch.randn(N, 3, 32, 32), torch.arange(N) % 3
    dm = types.SimpleNamespace(class_names=CLASSES, mean=[0.5] * 3, std=[0.2] * 3, test_dataloader=lambda: [(images, labels)], transform=lambda b, train: b)  # fmt: skip
    maps.figure(models, dm, 1, tmp_path / "m.png", "t")
    assert used == [models["LBAM"].attention_modules[0], models["BAM"].attention_modules[0]]
    panels = [im for ax in figures[0].axes for im in ax.get_images() if im.get_array().ndim == 2]  # not RGB
    assert len(panels) == 3 * 4 and len({im.get_clim() for im in panels}) == 1  # 3 rows × 4 map columns
    assert all(im.get_interpolation() == "nearest" for im in panels)
    assert any(ax.get_label() == "<colorbar>" for ax in figures[0].axes)
    assert "32×32 maps" in figures[0]._suptitle.get_text()


def test_the_figure_takes_its_images_from_a_real_datamodule(tmp_path, data_cache):
    """The loaders give uint8 batches; the figure must feed the model what training feeds it (the datamodule's
    transform), or a real run's maps fail with a dtype error."""
    from lbam.data import SyntheticBCCDDataModule

    dm = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=32, batch_size=8)
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))[0].dtype == torch.uint8  # what made the old figure fail
    torch.manual_seed(0)
    model = build_backbone(**KWARGS, attention="lbam").eval()
    maps.figure({"LBAM": model}, dm, 1, tmp_path / "m.png", "t")
    assert (tmp_path / "m.png").stat().st_size > 5_000
