"""Datasets of the two embodiments (BCCD cell crops, Oxford-IIIT Pet cats vs dogs) and their synthetic twins.

Every dataset is a :class:`DataModule` (the interface the runner and the report read); every problem a user can
fix raises :class:`DataError`, whose message is one line.
"""

from lbam.data.base import DataModule
from lbam.data.bccd import BCCDDataModule
from lbam.data.download import UnsafeArchiveError
from lbam.data.errors import DataError, DatasetNotFoundError
from lbam.data.oxford_pets import OxfordPetsDataModule
from lbam.data.synthetic import SyntheticBCCDDataModule, SyntheticPetsDataModule

__all__ = [
    "BCCDDataModule",
    "DataError",
    "DataModule",
    "DatasetNotFoundError",
    "OxfordPetsDataModule",
    "SyntheticBCCDDataModule",
    "SyntheticPetsDataModule",
    "UnsafeArchiveError",
]
