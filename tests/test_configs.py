"""Hydra configs of the runner: composition of every experiment x attention, validation, run names."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lbam.train import CONFIG_DIR, ConfigError, compose_config, run_name, train, validate

EXPERIMENTS = ("embodiment1", "embodiment2", "embodiment1_quick", "embodiment2_quick")
ATTENTIONS = ("none", "se", "cbam", "bam", "eca", "lbam")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_attention(experiment):
    for attention in ATTENTIONS:
        cfg = compose_config([f"experiment={experiment}", f"attention={attention}"])
        assert cfg.experiment_name == experiment
        assert cfg.attention.name == attention
        assert cfg.profile == ("quick" if experiment.endswith("_quick") else "full")
        embodiment1 = experiment.startswith("embodiment1")
        assert cfg.dataset._target_ == (
            "lbam.data.BCCDDataModule" if embodiment1 else "lbam.data.OxfordPetsDataModule"
        )
        assert cfg.backbone.name == ("cnn4" if embodiment1 else "vgg16")
        validate(cfg)  # builds the model on the meta device: every combination is valid


def test_experiment_values_win_and_command_line_wins_over_experiment():
    full, quick = compose_config(["experiment=embodiment2"]), compose_config(["experiment=embodiment2_quick"])
    assert full.optimizer._target_ == "torch.optim.SGD" and full.optimizer.lr == 0.01
    assert quick.optimizer._target_ == "torch.optim.SGD"  # inherited from embodiment2
    assert (
        quick.dataset.image_size < full.dataset.image_size
        and quick.trainer.max_epochs < full.trainer.max_epochs
    )
    assert quick.backbone.width_mult < 1 and full.backbone.pretrained is False
    cli = compose_config(["experiment=embodiment1_quick", "trainer.max_epochs=7", "dataset=synthetic_bccd"])
    assert cli.trainer.max_epochs == 7
    assert cli.dataset._target_ == "lbam.data.SyntheticBCCDDataModule"
    assert cli.dataset.image_size == 48  # the experiment's value still applies to the chosen dataset
    assert OmegaConf.select(cli, "scheduler.T_max") == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attention.name=foo", "unknown attention 'foo'"),
        ("backbone.placement=nowhere", "placement"),
        ("attention.kernel_size=4", "odd"),
        ("attention.branches=diagonal", "branches"),
        ("backbone.name=alexnet", "unknown backbone"),
        ("optimizer.lr=-1", "learning rate"),
        ("dataset.image_size=0", "dataset.image_size"),
        ("early_stopping_patience=3", "val_size"),
    ],
)
def test_invalid_values_fail_before_training_with_a_clear_message(tmp_path, override, message):
    overrides = [
        "experiment=embodiment1",
        "paths.data_dir=/nonexistent",  # would fail later, at data setup, if validation let it through
        f"paths.results_dir={tmp_path}/results",
        f"paths.experiments_dir={tmp_path}/experiments",
        override,
    ]
    with pytest.raises(ConfigError, match=message):
        train(compose_config(overrides), overrides)
    assert not any(tmp_path.iterdir())  # no row, no run directory


def test_unknown_attention_group_option_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="attention"):
        compose_config(["attention=foo"])


def test_run_name_is_deterministic_and_ignores_device_and_path_noise():
    base = run_name("lbam", ["experiment=embodiment1", "attention=lbam", "seed=0"], 0)
    assert base == "lbam__seed0"
    noisy = [
        "trainer=gpu",
        "trainer.devices=4",
        "paths.results_dir=/x",
        "dataset.num_workers=8",
        "hydra.verbose=true",
    ]
    assert run_name("lbam", ["seed=0", *noisy], 0) == base
    k3 = run_name("lbam", ["attention.kernel_size=3", "backbone.placement=block"], 1)
    assert k3 == "lbam__kernel_size=3__backbone.placement=block__seed1"
    assert run_name("lbam", ["backbone.placement=block", "attention.kernel_size=3"], 1) == k3  # order-free
    assert run_name("lbam", ["attention.kernel_size=5"], 1) != run_name(
        "lbam", ["attention.kernel_size=3"], 1
    )
    assert run_name("lbam", ["trainer=quick"], 0) != base  # fewer epochs is a different run


def test_run_name_stays_short_and_distinct_when_hashed():
    long_a = run_name("lbam", [f"+x{i}={'a' * 20}" for i in range(8)], 0)
    long_b = run_name("lbam", [f"+x{i}={'b' * 20}" for i in range(8)], 0)
    odd_a, odd_b = (
        run_name("cbam", ["+backbone.widths=[8,16]"], 0),
        run_name("cbam", ["+backbone.widths=[8,32]"], 0),
    )
    assert len(long_a) <= 110 and long_a != long_b and long_a.endswith("__seed0")
    assert (
        odd_a != odd_b
        and "[" not in odd_a
        and "/" not in run_name("se", ["hydra/launcher=slurm", "+a=b/c"], 0)
    )


@pytest.fixture
def hydra_cfg():
    """Compose with the hydra node and install it as Hydra's singleton (needed to resolve run dirs); the
    singleton is cleared afterwards so it cannot leak into later tests of the same worker."""

    def compose_with_hydra(overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield compose_with_hydra
    HydraConfig.instance().cfg = None


def test_hydra_run_dir_is_the_run_directory(hydra_cfg):
    cfg = hydra_cfg(["experiment=embodiment1", "attention=eca", "seed=2", "attention.kernel_size=5"])
    expected = "experiments/embodiment1/eca__kernel_size=5__seed2"
    assert OmegaConf.select(cfg, "hydra.run.dir") == expected
    assert f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" == expected


def test_slurm_launcher_extends_the_submitit_plugin(hydra_cfg):
    cfg = hydra_cfg(["hydra/launcher=slurm"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.timeout_min == 240 and "partition" in cfg.hydra.launcher


def test_trainer_options():
    for name, key, value in (
        ("cpu", "accelerator", "cpu"),
        ("gpu", "accelerator", "gpu"),
        ("ddp", "strategy", "ddp"),
    ):
        assert compose_config([f"trainer={name}"]).trainer[key] == value
    assert compose_config(["trainer=ddp"]).trainer.devices == 2
