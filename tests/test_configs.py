"""The runner's configuration: composition of every experiment x attention, checks before any data is read, run
names, the machine-dependent `auto` values, and one clear line for every bad value on the command line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lbam.config import CONFIG_DIR, ConfigError, check, relevant_overrides, resolve_auto, run_name
from lbam.config import compose as compose_config
from lbam.models import build_backbone
from lbam.train import train

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("embodiment1", "embodiment2", "embodiment1_quick", "embodiment2_quick", "embodiment1_curve")
ATTENTIONS = ("none", "se", "cbam", "bam", "eca", "lbam")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_attention(experiment):
    for attention in ATTENTIONS:
        cfg = compose_config([f"experiment={experiment}", f"attention={attention}"])
        assert cfg.experiment_name == experiment and cfg.attention.name == attention
        embodiment1 = experiment.startswith("embodiment1")
        assert cfg.dataset._target_.endswith("BCCDDataModule" if embodiment1 else "OxfordPetsDataModule")
        assert cfg.backbone.name == ("cnn4" if embodiment1 else "vgg16")
        check(cfg)
        kwargs = {k: v for k, v in OmegaConf.to_container(cfg.attention).items() if k != "name"}
        backbone = {k: v for k, v in OmegaConf.to_container(cfg.backbone).items() if k != "_target_"}
        with torch.device("meta"):  # every combination builds (no memory, no compute)
            build_backbone(**backbone, num_classes=3, attention=attention, attention_kwargs=kwargs)


def test_plain_run_defaults_to_the_real_bccd_and_experiment_values_win():
    plain = compose_config([])
    assert plain.dataset._target_ == "lbam.data.BCCDDataModule" and plain.profile == "full"
    full, quick = compose_config(["experiment=embodiment2"]), compose_config(["experiment=embodiment2_quick"])
    assert full.optimizer._target_ == "torch.optim.SGD" and full.optimizer.lr == 0.01
    assert quick.optimizer._target_ == "torch.optim.SGD"  # inherited from embodiment2
    assert quick.dataset.image_size < full.dataset.image_size
    assert quick.trainer.max_epochs < full.trainer.max_epochs
    cli = compose_config(["experiment=embodiment1_quick", "trainer.max_epochs=7", "dataset=synthetic_bccd"])
    assert cli.trainer.max_epochs == 7 and cli.dataset._target_ == "lbam.data.SyntheticBCCDDataModule"
    assert cli.dataset.image_size == 48  # the experiment's value still applies to the chosen dataset
    assert OmegaConf.select(cli, "scheduler.T_max") == 7


BAD = [
    ("attention.name=foo", "unknown attention 'foo'"),
    ("backbone.placement=nowhere", "placement"),
    ("attention.kernel_size=4", "odd"),
    ("attention.branches=diagonal", "branches"),
    ("backbone.name=alexnet", "unknown backbone"),
    ("backbone.width_mult=abc", "backbone.width_mult='abc' must be a number > 0"),
    ("optimizer.lr=-1", "learning rate"),
    ("optimizer.lr=abc", "optimizer.lr='abc' must be a number"),
    ("optimizer.weight_decay=[1]", "optimizer.weight_decay=[1] must be a number"),
    ("scheduler.T_max=abc", "scheduler.T_max='abc' must be an integer >= 1"),
    ("scheduler.T_max=0", "scheduler.T_max=0 must be an integer >= 1"),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size=0 must be an integer >= 1"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 must be null, an integer >= 1"),
    ("trainer.accelerator=tpu", "trainer.accelerator='tpu' must be one of auto, cpu, gpu, cuda"),
    ("trainer.accelerator=cuda:0", "trainer.accelerator='cuda:0' must be one of auto, cpu, gpu, cuda"),
    ("analysis.alpha=5", "analysis.alpha=5 must be a number in (0, 1)"),
    ("analysis.alpha=abc", "analysis.alpha='abc' must be a number in (0, 1)"),
    (
        "analysis.noninferiority_margin=-0.01",
        "analysis.noninferiority_margin=-0.01 must be a number in (0, 1)",
    ),
    ("dataset.image_size=0", "image_size"),
    ("dataset.batch_size=abc", "batch_size"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer >= 1"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' must be an integer >= 1"),
    # auto, -1 or a list would name and size a run by whatever the machine has
    ("trainer.devices=auto", "trainer.devices='auto' must be a number of devices >= 1"),
    ("trainer.devices=-1", "trainer.devices=-1 must be a number of devices >= 1"),
    ("trainer.devices=[0,1]", "must be a number of devices >= 1 (choose GPUs with CUDA_VISIBLE_DEVICES)"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0 must be an integer >= 1"),
    ("trainer.limit_train_batches=1.5", "limit_train_batches"),
    ("seed=-1", "seed=-1 must be an integer >= 0"),
    ("model.compile=maybe", "model.compile='maybe' must be one of auto, true, false"),
    ("model.compile_mode=fast", "compile_mode='fast' must be one of default, reduce-overhead"),
    ("analysis.noninferiority_margin=2", "noninferiority_margin"),
    ("callbacks=early_stopping", "dataset.val_size > 0"),
    # Issue #31: 100000 px was not checked (12 GB written before it was stopped); precision=foo failed in a 5-line
    # block after the data had loaded.
    ("dataset.image_size=100000", "dataset.image_size=100000 must be an integer in [8, 512] (pixels;"),
    (
        "trainer.precision=foo",
        "trainer.precision='foo' must be one of null, 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true",
    ),
    ("trainer.precision=32", "trainer.precision=32 must be one of null, 32-true"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_invalid_values_fail_before_any_data_is_read(tmp_path, override, message):
    overrides = [
        "paths.data_dir=/nonexistent",  # would fail later, at data setup, if the checks let it through
        f"paths.results_dir={tmp_path}/results",
        f"paths.experiments_dir={tmp_path}/experiments",
        *override.split(),
    ]
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        train(compose_config(overrides), overrides)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # no row, no run directory


def _cli(tmp_path, *overrides, env=None):
    cmd = [sys.executable, "-m", "lbam.train", f"paths.experiments_dir={tmp_path}/e", *overrides]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.mark.slow
def test_command_line_errors_are_one_line_without_traceback(tmp_path):
    for override, message in (BAD[7], BAD[2], ("paths.data_dir=/nonexistent", "not found")):
        proc = _cli(tmp_path, "dataset.download=false", override)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr + proc.stdout
    verbose = _cli(tmp_path, BAD[7][0], env={"HYDRA_FULL_ERROR": "1"})
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr  # kept for debugging


def test_unknown_attention_group_option_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="attention"):
        compose_config(["attention=foo"])


def test_run_name_is_deterministic_and_ignores_device_and_path_noise():
    base = run_name("lbam", ["experiment=embodiment1", "attention=lbam", "seed=0"], 0)
    assert base == "lbam__seed0"
    noisy = [
        "trainer=gpu",
        "paths.results_dir=/x",
        "callbacks.last_checkpoint.min_interval_s=0",
        "dataset.num_workers=8",
        "model.compile=true",
    ]
    assert run_name("lbam", ["seed=0", *noisy, "hydra.verbose=true", "logger=tensorboard"], 0) == base
    # The world size is part of the run (the batch is per device), however it was set.
    four = OmegaConf.create({"devices": 4, "num_nodes": 1})
    assert run_name("lbam", ["trainer=ddp", "trainer.devices=4"], 0, four) == "lbam__trainer.devices=4__seed0"
    assert run_name("lbam", ["trainer=ddp"], 0, four) == "lbam__trainer.devices=4__seed0"
    assert run_name("lbam", ["trainer.devices=4"], 0) == "lbam__trainer.devices=4__seed0"  # a row's overrides
    assert run_name("lbam", ["trainer.devices=1"], 0, OmegaConf.create({"devices": 1})) == base
    k3 = run_name("lbam", ["attention.kernel_size=3", "backbone.placement=block"], 1)
    assert k3 == "lbam__kernel_size=3__backbone.placement=block__seed1"
    assert run_name("lbam", ["backbone.placement=block", "attention.kernel_size=3"], 1) == k3  # order-free
    assert run_name("lbam", ["attention.kernel_size=5"], 1) != run_name(
        "lbam", ["attention.kernel_size=3"], 1
    )
    assert run_name("lbam", ["trainer=quick"], 0) != base  # fewer epochs is a different run
    # a sweep's job spells booleans as Python does: the same run, the same name
    assert run_name("lbam", ["attention.residual=False"], 0) == run_name(
        "lbam", ["attention.residual=false"], 0
    )
    # the row keeps what defines the run beyond experiment, attention and seed
    assert relevant_overrides(["seed=1", "attention=lbam", "dataset.train_subset=25", "trainer=cpu"]) == [
        "dataset.train_subset=25"
    ]


def test_run_name_stays_short_and_distinct_when_hashed():
    long_a = run_name("lbam", [f"+x{i}={'a' * 20}" for i in range(8)], 0)
    long_b = run_name("lbam", [f"+x{i}={'b' * 20}" for i in range(8)], 0)
    odd_a = run_name("cbam", ["+backbone.widths=[8,16]"], 0)
    odd_b = run_name("cbam", ["+backbone.widths=[8,32]"], 0)
    assert len(long_a) <= 110 and long_a != long_b and long_a.endswith("__seed0")
    assert (
        odd_a != odd_b
        and "[" not in odd_a
        and "/" not in run_name("se", ["hydra/launcher=slurm", "+a=b/c"], 0)
    )


def test_auto_values_resolve_for_this_cpu_and_explicit_values_stay():
    cfg = compose_config([])
    assert resolve_auto(cfg) is False  # no GPU here
    t = cfg.trainer
    assert (t.accelerator, t.precision, t.deterministic) == ("cpu", "32-true", "warn")
    assert t.enable_progress_bar is False  # pytest captures stderr: not an interactive terminal
    assert cfg.model.compile is False and cfg.model.channels_last is False
    explicit = compose_config(
        ["model.compile=true", "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=true"]
    )
    resolve_auto(explicit)
    assert explicit.model.compile is True and explicit.trainer.precision == "bf16-mixed"
    assert explicit.trainer.enable_progress_bar is True


@pytest.fixture
def hydra_cfg():
    """Compose with the hydra node and install it as Hydra's singleton (needed to resolve run dirs); cleared
    afterwards so it cannot leak into later tests of the same worker."""

    def compose_with_hydra(overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield compose_with_hydra
    HydraConfig.instance().cfg = None


def test_hydra_run_dir_is_the_run_directory(hydra_cfg):
    cfg = hydra_cfg(["experiment=embodiment1", "attention=eca", "seed=2", "attention.kernel_size=5"])
    expected = f"{ROOT}/experiments/embodiment1/eca__kernel_size=5__seed2"  # anchored to the checkout
    assert OmegaConf.select(cfg, "hydra.run.dir") == expected
    assert f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" == expected


def test_slurm_launcher_extends_the_submitit_plugin(hydra_cfg):
    cfg = hydra_cfg(["hydra/launcher=slurm"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.timeout_min == 240 and "partition" in cfg.hydra.launcher


def test_group_options_instantiate_what_they_name():
    from hydra.utils import instantiate

    assert compose_config(["trainer=ddp"]).trainer.strategy == "ddp"  # srun / torchrun start the ranks
    assert compose_config(["trainer=ddp_spawn"]).trainer.strategy == "ddp_spawn"  # it starts them itself
    logger = compose_config(["logger=tensorboard", "run_name=r"]).logger
    assert set(logger) == {"csv", "tensorboard"}
    tb = instantiate(logger.tensorboard)
    assert type(tb).__name__ == "TensorBoardLogger" and tb.save_dir.endswith("experiments/default/r")
    assert set(compose_config(["callbacks=early_stopping"]).callbacks) == {
        "last_checkpoint",
        "early_stopping",
    }
