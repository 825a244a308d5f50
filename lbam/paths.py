"""Where things live: the one place that says where the configs, the project folders and the data are.

- **Configs** (``CONFIG_DIR``): ``configs/`` at the top of a checkout; inside the package in an installed wheel.

- **Project root** (``paths.root``): ``LBAM_ROOT`` if set, else the checkout that holds this package (a source
  tree or an editable install), else the working directory (an installed wheel: ``lbam-train`` and
  ``lbam-report`` then say so in one line on stderr). ``experiments/``, ``results/`` and ``data/.cache/`` live
  under it, whatever the working directory.
- **Results**: the committed reference is ``<root>/results`` (runs/, tables/, figures/); your runs and their
  report go to ``<root>/results/local`` (the same layout, git-ignored), so that a reproduction never changes a
  tracked file. ``paths=reference`` (``make ... REFERENCE=1``) writes to the reference: the maintainers' path.
- **Data root**, per dataset folder (``BCCD``, ``oxford-iiit-pet``): the first of
  1. ``LBAM_DATA_DIR``;
  2. a configured ``paths.data_dir``;
  3. ``../shared/data`` beside the project root, when it holds that dataset (where the project's machines keep
     the real BCCD, read-only);
  4. ``<root>/data``.

  The Makefile, the command-line tools and the tests all go through :func:`data_root`. A folder named by 1 or 2
  that does not exist is an error (see ``lbam.data``), never created: a typo must not become an empty dataset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def _config_dir() -> Path:
    """The Hydra configs: ``configs/`` at the top of a checkout (the design card's layout), else the copy a wheel
    ships inside the package (``lbam/configs``, mapped from ``configs/`` by pyproject.toml: no second copy)."""
    checkout = PACKAGE_DIR.parent / "configs"
    if (PACKAGE_DIR.parent / "pyproject.toml").is_file() and (checkout / "train.yaml").is_file():
        return checkout
    return PACKAGE_DIR / "configs"


CONFIG_DIR = _config_dir()


def project_root() -> Path:
    """``LBAM_ROOT``, else the checkout holding this package, else the working directory."""
    env = os.environ.get("LBAM_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():  # a source tree; site-packages holds none
        return checkout
    return Path.cwd().resolve()


def root_source() -> str:
    """Which rule chose the project root: ``LBAM_ROOT``, ``checkout`` or ``working directory``."""
    if os.environ.get("LBAM_ROOT"):
        return "LBAM_ROOT"
    return "checkout" if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else "working directory"


def announce_root(tool: str) -> None:
    """One line on stderr naming where ``tool`` writes, when no checkout holds this package and LBAM_ROOT is
    unset (an installed wheel): the outputs follow the working directory then, which a user may not expect."""
    if root_source() == "working directory":
        root = project_root()
        print(
            f"{tool}: no checkout holds this lbam, so outputs go under the working directory {root} "
            "(experiments/, results/local/, data/.cache/); set LBAM_ROOT to choose another folder",
            file=sys.stderr,
        )


def reference_dir() -> Path:
    """``<root>/results``: the committed reference (configs/paths: ``paths.reference_dir``)."""
    return project_root() / "results"


def results_dir() -> Path:
    """``<root>/results/local``: your runs and their report, git-ignored (``paths.results_dir``)."""
    return reference_dir() / "local"


def default_data_dir() -> Path:
    """``<root>/data``: the one data folder that downloads may create."""
    return project_root() / "data"


def data_source(
    configured: str | None = None, folder: str | None = None, use_env: bool = True
) -> tuple[Path, str]:
    """(data root, which rule chose it: ``LBAM_DATA_DIR``, ``paths.data_dir``, ``shared`` or ``default``);
    ``use_env=False``: the root the rule gives without ``LBAM_DATA_DIR`` (for messages)."""
    env = os.environ.get("LBAM_DATA_DIR") if use_env else None
    if env:
        return Path(env).expanduser().resolve(), "LBAM_DATA_DIR"
    if configured:
        return Path(str(configured)).expanduser().resolve(), "paths.data_dir"
    shared = project_root().parent / "shared" / "data"
    if (shared / (folder or "BCCD")).is_dir():
        return shared, "shared"
    return default_data_dir(), "default"


def data_root(configured: str | None = None, folder: str | None = None) -> Path:
    """The folder holding dataset ``folder`` (see the module docstring for the order)."""
    return data_source(configured, folder)[0]


def _data_dir_resolver(configured: str | None = None, folder: str | None = None) -> str:
    return str(data_root(configured, folder))


# ${lbam_root:} and ${lbam_data_dir:${paths.data_dir},BCCD} in configs/paths and configs/dataset.
OmegaConf.register_new_resolver("lbam_root", lambda: str(project_root()), replace=True)
OmegaConf.register_new_resolver("lbam_data_dir", _data_dir_resolver, replace=True)


def main() -> None:
    """`python -m lbam.paths [FOLDER]`: print the data root for FOLDER (default BCCD), e.g. for the Makefile."""
    print(data_root(folder=sys.argv[1] if len(sys.argv) > 1 else None))


if __name__ == "__main__":
    main()
