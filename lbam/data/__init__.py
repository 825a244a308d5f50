"""Datasets of the two embodiments (BCCD cell crops, Oxford-IIIT Pet cats vs dogs) and their synthetic twins."""

from lbam.data.bccd import BCCDDataModule
from lbam.data.download import DatasetNotFoundError
from lbam.data.oxford_pets import OxfordPetsDataModule
from lbam.data.synthetic import SyntheticBCCDDataModule, SyntheticPetsDataModule

__all__ = [
    "BCCDDataModule",
    "DatasetNotFoundError",
    "OxfordPetsDataModule",
    "SyntheticBCCDDataModule",
    "SyntheticPetsDataModule",
]
