"""The runner's configuration: composing it, checking it before any data is read, naming runs, and resolving the
`auto`/`null` values that depend on the machine (accelerator, precision, compile, progress bar).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
from collections.abc import Sequence

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from lbam.compile import COMPILE_MODES
from lbam.paths import CONFIG_DIR  # also registers the path resolvers the configs use
from lbam.results import PROFILES

# Overrides that change where or how fast a run trains, not what it computes: left out of the run name and the row.
_NOISE_KEYS = {"experiment", "attention", "seed", "force", "paths", "local", "logger", "verbose", "sweeps"}
# Checkpoint and logging options change where a run writes, never what it computes.
_NOISE_PREFIXES = ("hydra", "paths.", "logger.", "sweeps.", "callbacks.last_checkpoint.")
_NOISE_DOTTED = {
    "trainer.accelerator", "trainer.strategy", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.enable_checkpointing", "trainer.benchmark", "dataset.num_workers", "dataset.pin_memory",
    "dataset.on_device", "dataset.root", "dataset.cache_dir", "dataset.download", "dataset.verify", "model.compile",
    "model.channels_last", "model.check_every", "model.compile_backend", "model.compile_mode",
    # The world size names a run through world_overrides (devices x nodes change the global batch), whatever
    # way it was set (trainer=ddp, trainer.devices=4): the typed values are replaced by its canonical tokens.
    "trainer.devices", "trainer.num_nodes",
}  # fmt: skip
_WORLD = {"trainer.devices", "trainer.num_nodes"}
_DEVICE_TRAINERS = {"default", "cpu", "gpu", "ddp", "ddp_spawn"}
_CANONICAL = {"True": "true", "False": "false", "None": "null"}
_MAX_NAME = 100


class ConfigError(ValueError):
    """An invalid configuration value, caught before any data is loaded; the message is one line."""


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def world_overrides(trainer) -> list[str]:
    """`trainer.devices=N` / `trainer.num_nodes=M` when a run trains on more than one device: the batch size is
    per device, so N devices train another run than one (its name and row say so)."""
    out = []
    for key in ("devices", "num_nodes"):
        value = trainer.get(key, 1) if trainer is not None else 1
        if value not in (1, "1", None, "auto"):
            out.append(f"trainer.{key}={_CANONICAL.get(str(value), str(value)).replace(' ', '')}")
    return out


def relevant_overrides(overrides: Sequence[str], trainer=None) -> list[str]:
    """The overrides that define a run beyond its experiment, attention group and seed, sorted (device, paths,
    workers and logging are noise: the same run on another machine keeps its name), plus the world size of
    ``trainer`` (the trainer config) when it is above one device. Without ``trainer`` (a row's overrides, already
    canonical), typed `trainer.devices` / `trainer.num_nodes` values are kept as they are."""
    kept = world_overrides(trainer)
    for o in overrides:
        key, value = _key(o), o.split("=", 1)[1] if "=" in o else ""
        if key in _WORLD and trainer is None:  # a row's canonical overrides: its world tokens stay
            kept.append(o)
            continue
        if key in _NOISE_KEYS or key in _NOISE_DOTTED or key.startswith(_NOISE_PREFIXES):
            continue
        if key == "trainer" and value in _DEVICE_TRAINERS:
            continue
        # Hydra's sweeper writes booleans and null as True/False/None where a single run keeps them as typed:
        # one spelling, so a run gets the same name (and directory) either way.
        kept.append(f"{o.split('=', 1)[0]}={_CANONICAL.get(value, value)}" if "=" in o else o)
    return sorted(kept)


def run_name(attention: str, overrides: Sequence[str], seed: int, trainer=None) -> str:
    """Deterministic, filesystem-safe run name, e.g. `lbam__kernel_size=3__seed0`; a hash keeps long or rewritten
    names distinct."""
    relevant = relevant_overrides(overrides, trainer)
    raw = "__".join([attention] + [o.removeprefix("attention.") for o in relevant])
    safe = re.sub(r"[^A-Za-z0-9._,=+-]", "_", raw.replace("/", "-"))
    if safe != raw or len(safe) > _MAX_NAME:
        safe = f"{safe[: _MAX_NAME - 10]}__{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return f"{safe}__seed{seed}"


def _run_name_resolver(*, _root_: DictConfig) -> str:
    overrides = list(_root_.hydra.overrides.task) if "hydra" in _root_ else []
    return run_name(_root_.attention.name, overrides, _root_.seed, _root_.get("trainer"))


# hydra.run.dir and hydra.sweep.subdir (configs/train.yaml) use it: Hydra's output dir is the run directory.
OmegaConf.register_new_resolver("lbam_run_name", _run_name_resolver, replace=True)


def compose(overrides: Sequence[str] = (), with_hydra: bool = False) -> DictConfig:
    """The training config as `python -m lbam.train <overrides>` sees it (the hydra node only if asked)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=with_hydra)


# --- checks: every numeric key, before any data is read ------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 512
_CHOICES = {
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda"),
    "model.compile": ("auto", True, False),
    "model.channels_last": ("auto", True, False),
    "model.compile_mode": COMPILE_MODES,
    "scheduler.interval": (None, "epoch", "step"),
    # Lightning's names (null: chosen per machine, lbam.config.resolve_auto); its aliases (32, "bf16") are left
    # out so that one setting has one spelling in run names and rows.
    "trainer.precision": (None, "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"),
}
_RULES = {  # key: (what it must be, test)
    "seed": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "force": ("true or false", lambda v: isinstance(v, bool)),
    "backbone.width_mult": ("a number > 0", lambda v: _is_num(v) and v > 0),
    "trainer.max_epochs": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "trainer.max_steps": ("-1 (no limit) or an integer >= 1", lambda v: _is_int(v) and (v == -1 or v >= 1)),
    "trainer.log_every_n_steps": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    # A count, never auto / -1 / a list: the batch is per device, so the count names the run and sizes its row.
    "trainer.devices": (
        "a number of devices >= 1 (choose GPUs with CUDA_VISIBLE_DEVICES)",
        lambda v: _is_int(v) and v >= 1,
    ),
    "trainer.num_nodes": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "trainer.gradient_clip_val": ("null or a number >= 0", lambda v: v is None or (_is_num(v) and v >= 0)),
    **{
        f"trainer.limit_{s}_batches": (
            "null, an integer >= 0 or a fraction in [0, 1]",
            lambda v: v is None or (_is_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v <= 1),
        )
        for s in ("val", "test")
    },
    "trainer.limit_train_batches": (  # 0 would train nothing and leave no checkpoint to test
        "null, an integer >= 1 or a fraction in (0, 1]",
        lambda v: v is None or (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
    ),
    "scheduler.step_size": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "scheduler.T_max": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "dataset.batch_size": ("an integer >= 2 (batch norm needs two samples)", lambda v: _is_int(v) and v >= 2),
    # Every sample is decoded and cached at this side (oxford_pets at side / 0.875): BCCD's 4,879 crops take 3.8 GB
    # at 512 px; 100000 px asked for terabytes (12 GB were written before it was stopped).
    "dataset.image_size": (
        f"an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (pixels; the protocols use 32-224)",
        lambda v: _is_int(v) and MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE,
    ),
    "analysis.noninferiority_margin": ("a number in (0, 1)", lambda v: _is_num(v) and 0 < v < 1),
    "analysis.alpha": ("a number in (0, 1)", lambda v: _is_num(v) and 0 < v < 1),
}


def _fail(key: str, value, must: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} must be {must} (set it on the command line, e.g. {key}=<value>)")


def _check_numeric_kwargs(node: DictConfig, group: str) -> None:
    """Where the target's own default is a number, the configured value must be one: `optimizer.lr=abc` fails
    here with its name, not deep inside torch."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        params = inspect.signature(get_class(target)).parameters
    except Exception as e:
        raise ConfigError(f"{group}._target_={target!r} cannot be imported ({e})") from None
    for key, value in node.items():
        p = params.get(key)
        numeric = p is not None and (
            _is_num(p.default) or str(p.annotation) in ("int", "float", "<class 'int'>", "<class 'float'>")
        )
        if numeric and not _is_num(value):
            raise _fail(f"{group}.{key}", value, "a number")


def check(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for an invalid value; cheap: no data, no model."""
    for key, (must, ok) in _RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if (value is not None or key in ("seed",)) and not ok(value):
            raise _fail(key, value, must)
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise _fail(
                key, value, "one of " + ", ".join("null" if c is None else str(c) for c in choices).lower()
            )
    if cfg.profile not in PROFILES:
        raise _fail("profile", cfg.profile, "one of " + ", ".join(PROFILES))
    for group in ("optimizer", "scheduler"):
        _check_numeric_kwargs(cfg[group], group)
    if "early_stopping" in (cfg.get("callbacks") or {}) and not cfg.dataset.get("val_size"):
        raise ConfigError(
            "callbacks=early_stopping monitors val_acc and needs a validation split: set dataset.val_size > 0 "
            "(a count, or a fraction of the training split)"
        )


def build_or_fail(what: str, factory, *args, **kwargs):
    """``factory(*args, **kwargs)``; a ValueError/TypeError/KeyError there is a bad value: ConfigError naming ``what``."""
    from hydra.errors import InstantiationException

    from lbam.data import DataError  # a constructor's DataError is a bad value, not bad data

    try:
        return factory(*args, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, InstantiationException, DataError) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        if isinstance(cause, ConfigError):
            raise cause from None
        message = " ".join(str(cause).split())  # one line
        raise ConfigError(f"invalid {what} configuration: {message}") from None


# --- machine-dependent values --------------------------------------------------------------------------------


def _interactive() -> bool:
    from hydra.core.hydra_config import HydraConfig

    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    return sys.stderr.isatty() and not multirun


def resolve_auto(cfg: DictConfig) -> bool:
    """Fill the machine-dependent values in place and return whether the run uses a GPU.

    accelerator auto → gpu when CUDA is present (gpu/cuda without CUDA is an error, never a silent CPU run);
    precision null → bf16-mixed on a GPU that computes bf16 natively (compute capability ≥ 8.0), 16-mixed (fp16
    with a loss scaler) on older GPUs, 32-true on the CPU; deterministic null → "warn" on the CPU (same seed, same
    numbers), off on the GPU; benchmark null → cuDNN's autotuner on a GPU unless deterministic; progress bar null →
    on in an interactive terminal outside sweeps; model.compile / channels_last auto → on for GPU runs, off on the
    CPU (the short CPU runs would not repay compile's warm-up).
    """
    t, m = cfg.trainer, cfg.model
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={t.accelerator} but this machine has no CUDA device: use trainer.accelerator=cpu "
            "(or auto)"
        )
    with open_dict(cfg):
        t.accelerator = "gpu" if gpu else "cpu"
        if t.get("precision") is None:
            t.precision = ("bf16-mixed" if native_bf16() else "16-mixed") if gpu else "32-true"
        if t.get("deterministic") is None:
            t.deterministic = None if gpu else "warn"
        if t.get("benchmark") is None:
            t.benchmark = bool(gpu and not t.deterministic)
        if t.get("enable_progress_bar") is None:
            t.enable_progress_bar = _interactive()
        for key in ("compile", "channels_last"):
            if m[key] == "auto":
                m[key] = gpu
    return gpu


def native_bf16() -> bool:
    """bf16 is native from compute capability 8.0 (Ampere) on; V100 and T4 only emulate it, slowly."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def to_container(node) -> dict | list | None:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
