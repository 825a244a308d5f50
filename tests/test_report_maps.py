"""Attention-map figure from LBAM/BAM checkpoints, with a tiny model built and saved here (no runner)."""

import sys
import types

import pytest
import torch
from torch import nn

from lbam.models import build_backbone
from lbam.report import maps


class TinyAttention(nn.Module):
    """Exposes keep_maps/last_maps like the contract's LBAM/BAM."""

    def __init__(self, channels: int):
        super().__init__()
        self.spatial = nn.Conv2d(channels, 1, 3, padding=1)
        self.channel = nn.Linear(channels, channels)
        self.keep_maps = False
        self.last_maps = None

    def forward(self, x):
        ch = self.channel(x.mean((2, 3)))[:, :, None, None]
        sp = self.spatial(x)
        att = torch.sigmoid(ch + sp)
        self.last_maps = (
            {"channel": ch.detach(), "spatial": sp.detach(), "attention": att.detach()}
            if self.keep_maps
            else None
        )
        return x + x * att


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, attention: str, width_mult: float = 1.0, **_):
        super().__init__()
        c = int(8 * width_mult)
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.att = TinyAttention(c)
        self.head = nn.Linear(c, num_classes)
        self.attention_modules = [self.att]

    def forward(self, x):
        return self.head(self.att(torch.relu(self.stem(x))).mean((2, 3)))


def _row(tmp_path, attention: str, seed: int, build) -> tuple[dict, nn.Module]:
    torch.manual_seed(seed + (attention == "bam") * 10)
    model = build(
        "tiny", num_classes=3, attention=attention, attention_kwargs={}, placement="stage", width_mult=1.0
    )
    ckpt = {
        "state_dict": {
            **{f"model.{k}": v for k, v in model.state_dict().items()},
            "criterion.weight": torch.ones(3),
        },
        "hyper_parameters": {"backbone": "tiny", "attention": attention},
    }
    path = tmp_path / f"{attention}.ckpt"
    torch.save(ckpt, path)
    row = {
        "experiment": "exp",
        "run_name": f"{attention}_s{seed}",
        "dataset": "synthetic_bccd",
        "synthetic": True,
        "backbone": "tiny",
        "attention": attention,
        "attention_kwargs": {},
        "placement": "stage",
        "width_mult": 1.0,
        "image_size": 32,
        "seed": seed,
        "profile": "test",
        "device": "cpu",
        "status": "ok",
        "num_classes": 3,
        "checkpoint": path.name,
        "_path": tmp_path / f"{attention}.json",
    }
    return row, model


@pytest.fixture
def stub_models(monkeypatch):
    def build_backbone(
        name, num_classes, attention="none", attention_kwargs=None, placement="stage", width_mult=1.0
    ):
        assert name == "tiny" and placement == "stage" and attention_kwargs == {}
        return TinyNet(num_classes, attention, width_mult)

    monkeypatch.setitem(sys.modules, "lbam.models", types.SimpleNamespace(build_backbone=build_backbone))
    return build_backbone


def test_load_model_from_row_restores_weights_without_the_model_prefix(tmp_path, stub_models):
    row, saved = _row(tmp_path, "lbam", 0, stub_models)
    loaded = maps.load_model_from_row(row, repo_root=tmp_path)
    assert not loaded.training
    for (k, a), (_, b) in zip(saved.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_attention_map_figure_for_lbam_and_bam(tmp_path, stub_models, monkeypatch):
    rows = [_row(tmp_path, name, 0, stub_models)[0] for name in ("lbam", "bam")]
    torch.manual_seed(0)
    images, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % 3

    out = maps.collect_maps(maps.load_model_from_row(rows[0], tmp_path), images[:4])
    assert out["spatial"].shape == (4, 32, 32) and out["full"].shape == (4, 32, 32)
    assert 0 <= out["spatial"].min() and out["spatial"].max() <= 1 and out["pred"].shape == (4,)

    picked, picked_labels = maps.select_per_class([(images[:6], labels[:6]), (images[6:], labels[6:])], 2, 3)
    assert picked_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(picked[2], images[1])

    class FakeDM:
        num_classes, class_names, mean, std = 3, ["Platelets", "RBC", "WBC"], [0.5] * 3, [0.25] * 3

        def test_dataloader(self):
            return [(images, labels)]

    monkeypatch.setattr(maps, "datamodule_for_row", lambda row: FakeDM())
    monkeypatch.chdir(tmp_path)  # checkpoints are relative to the repo root
    path = maps.experiment_attention_maps(rows, "exp", tmp_path / "results", n_per_class=2)
    assert path == tmp_path / "results" / "figures" / "exp_attention_maps.png"
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_attention_maps_need_both_lbam_and_bam(tmp_path, stub_models):
    rows = [_row(tmp_path, "lbam", 0, stub_models)[0]]
    with pytest.raises(FileNotFoundError, match="both lbam and bam"):
        maps.experiment_attention_maps(rows, "exp", tmp_path)


@pytest.mark.parametrize("attention", ["lbam", "bam"])
def test_real_backbone_checkpoint_round_trip_and_maps(tmp_path, attention):
    torch.manual_seed(0)
    model = build_backbone("cnn4", num_classes=3, attention=attention)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.ckpt")
    row = {
        "backbone": "cnn4",
        "num_classes": 3,
        "attention": attention,
        "attention_kwargs": {},
        "placement": "stage",
        "width_mult": 1.0,
        "checkpoint": "m.ckpt",
    }
    loaded = maps.load_model_from_row(row, repo_root=tmp_path)
    out = maps.collect_maps(loaded, torch.randn(2, 3, 64, 64))
    assert out["spatial"].shape == (2, 64, 64) and out["full"].shape == (2, 64, 64)
    assert 0 <= out["full"].min() and out["full"].max() <= 1
    assert loaded.attention_modules[-1].last_maps is not None and not loaded.attention_modules[-1].keep_maps


def test_datamodule_for_row_rebuilds_the_runs_own_test_split(data_cache):
    # The run's overrides on top of its experiment: embodiment1_quick's 48 px, the run's test_size.
    row = {
        "overrides": [
            "experiment=embodiment1_quick",
            "attention=lbam",
            "seed=0",
            "dataset=synthetic_bccd",
            f"paths.cache_dir={data_cache}",
            "dataset.test_size=10",
        ]
    }
    dm = maps.datamodule_for_row(row)
    batches = list(dm.test_dataloader())
    assert sum(len(y) for _, y in batches) == 10 and batches[0][0].shape[-2:] == (48, 48)
    assert sorted(dm.class_names) == ["Platelets", "RBC", "WBC"]
