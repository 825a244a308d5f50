"""One line for Hydra's own errors, and for output folders that cannot be written: before Hydra runs (and creates
the run's folder), the command line's overrides are parsed and composed once (each option of a swept config group
too), and an unknown key, an unknown group option or an unparsable override, or an experiments or results folder
that is not a folder, read-only or on a full disk, becomes `error: …` on stderr with what to change, and exit
status 2. Hydra would print a multi-line block ending in
"Set the environment variable HYDRA_FULL_ERROR=1"; with HYDRA_FULL_ERROR=1 this check steps aside.
"""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Hydra's flags that take a value (the value is not an override).
_VALUED = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-p", "--package",
           "-c", "--cfg", "--experimental-rerun"}  # fmt: skip
_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # --info's optional value
_STEP_ASIDE = {"-h", "--help", "--hydra-help", "--version", "-sc", "--shell-completion"}
_PRINT_ONLY = {
    "-c",
    "--cfg",
    "-i",
    "--info",
    "-p",
    "--package",
}  # they write nothing: no output folder needed
# A run writes a checkpoint, logs and a row: less free space than this is a full disk for it.
MIN_FREE_BYTES = 16 * 2**20


def overrides_of(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in _VALUED or (arg in ("-i", "--info") and i + 1 < len(argv) and argv[i + 1] in _INFO):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a config (for suggestions)."""
    out = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            key = f"{prefix}{k}"
            out.append(key)
            out += _keys(node._get_node(k), key + ".")
    return out


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def explain(error: Exception, override: str | None, base: DictConfig | None) -> str:
    """One line for a composition error of ``override``."""
    from hydra.errors import MissingConfigException

    chain, cause = [], error
    while cause is not None and len(chain) < 5:  # Hydra keeps the reason in the exception's cause
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(" ".join(chain).split())
    if isinstance(error, MissingConfigException) and error.options:
        key, _, value = (override or "").lstrip("+~").partition("=")
        options = sorted(error.options)
        return f"{key}={value} is not an option of {key} (one of: {', '.join(options)}{_suggest(value, options)})"
    if "is not in struct" in text or ("Key '" in text and "not in struct" in text):
        key = (override or "").lstrip("+~").partition("=")[0]
        from lbam.paths import CONFIG_DIR

        known = (_keys(base) if base is not None else []) + [
            p.name for p in CONFIG_DIR.iterdir() if p.is_dir()
        ]
        return (
            f"unknown config key '{key}'{_suggest(key, known)} (`python -m lbam.train --cfg job` lists the keys; "
            f"`+{key}=...` adds a new one)"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = f" in '{override}'" if override else ""
    return f"invalid override{where}: {first}"


def precheck(argv: list[str]) -> None:
    """Exit 2 with one line on stderr when the command line cannot compose; return silently otherwise."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a in _STEP_ASIDE for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lbam.config import compose

    overrides = overrides_of(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        _fail(f"cannot parse the command line's overrides: {' '.join(str(e).split())[:300]}")
    first, variants = [], []
    for line, o in zip(overrides, parsed):
        key = line.split("=", 1)[0]
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [None]
        first.append(line if values[0] is None else f"{key}={values[0]}")
        if "." not in key and len(values) > 1:  # a swept config group: every option must exist
            variants += [(len(first) - 1, f"{key}={v}") for v in values[1:]]
    base = None  # the config the keys are suggested from: the chosen groups, else the defaults
    for groups in ([o for o in first if "." not in o.split("=", 1)[0] and "/" not in o], []):
        try:
            base = compose(groups)
            break
        except (HydraException, OmegaConfBaseException):
            continue
    cfg = None
    for index, replacement in [(None, None), *variants]:
        trial = list(first) if index is None else [*first[:index], replacement, *first[index + 1 :]]
        try:
            composed = compose(trial, with_hydra=True)
        except (HydraException, OmegaConfBaseException) as e:
            culprit = replacement or _culprit(trial, e)
            _fail(explain(e, culprit, base))
        cfg = cfg or composed
    if cfg is not None and not any(a in _PRINT_ONLY for a in argv):
        for key in ("paths.experiments_dir", "paths.results_dir"):
            if problem := folder_problem(OmegaConf.select(cfg, key)):
                _fail(f"{key}={OmegaConf.select(cfg, key)}: {problem}; point {key} at a writable folder")


def folder_problem(path, min_free: int = MIN_FREE_BYTES) -> str | None:
    """Why the output folder ``path`` (it or the nearest folder above it that exists) cannot take a run's files:
    not a folder, read-only, or a file system with less than ``min_free`` bytes free; None when it can."""
    where = Path(path).expanduser().absolute()
    while not os.path.lexists(where) and where != where.parent:
        where = where.parent
    if not where.is_dir():
        what = "a broken or looping link" if where.is_symlink() and not where.exists() else "not a folder"
        return f"{where} is {what}"
    # Mode bits too, not just os.access: root may write anywhere, but a folder marked read-only is meant to stay so.
    if not os.access(where, os.W_OK | os.X_OK) or not where.stat().st_mode & stat.S_IWUSR:
        return f"{where} is read-only"
    free = shutil.disk_usage(where).free
    if free < min_free:
        return f"the file system of {where} is full ({free / 2**20:.1f} MiB free, less than {min_free / 2**20:.0f})"
    return None


def _culprit(overrides: list[str], error: Exception) -> str | None:
    """The override the error names (Hydra quotes its key or its group path): the one whose option it could not
    find first (`attention=lbam attention=foo` names foo, not the valid lbam), else the first with its key."""
    text = str(error)
    for o in reversed(overrides):
        key, _, value = o.lstrip("+~").partition("=")
        if value and f"'{key.replace('.', '/')}/{value}'" in text:
            return o
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" in text or f"'{key.replace('.', '/')}/" in text or f"{key}/" in text:
            return o
    return None


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
