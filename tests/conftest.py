"""Shared fixtures: where the real data is, and a session-wide synthetic data cache (never the network)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # make test runs two xdist workers on two cores: one torch thread each avoids oversubscription,
    # which made small forward passes 20-50x slower. The environment variable carries it to the processes
    # that tests start (training runs, DDP ranks, the device check), whose OpenMP threads otherwise spin against
    # the other worker's.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def real_data_dir() -> Path:
    """The folder holding the real BCCD, by the project's one rule (lbam.paths: LBAM_DATA_DIR, ../shared/data)."""
    from lbam.paths import data_root

    return data_root(folder="BCCD")


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    """Folder containing the real BCCD/; skips when it is absent."""
    root = real_data_dir()
    if not (root / "BCCD" / "Annotations").is_dir():
        pytest.skip(f"real BCCD not found under {root} (set LBAM_DATA_DIR to the folder containing BCCD/)")
    return root


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One cache_dir per test session: synthetic datasets are generated and decoded there once."""
    return tmp_path_factory.mktemp("lbam-cache")
