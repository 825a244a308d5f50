"""The decoded-image cache: a hit never decodes; the file says what it is and is checked on load (key, ids, labels,
shape, checksum), a failed check is one warning line and a rebuild; an unusable cache path is one-line DataError."""

import logging
import shutil

import PIL.ImageFile
import pytest
import torch

from lbam.data import DataError, SyntheticBCCDDataModule
from lbam.data.cache import CACHE_VERSION, checksum


def built(cache_dir, image_size=16, **kw):
    dm = SyntheticBCCDDataModule(cache_dir=cache_dir, image_size=image_size, **kw)
    dm.setup()
    return dm


def rebuilt(cache_dir, caplog, image_size=16):
    """Set up again and return (the DataModule, the warning lines of lbam.data)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lbam.data"):
        dm = built(cache_dir, image_size)
    return dm, [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]


def tamper(path, **fields):
    """Rewrite the cache file at ``path`` with ``fields`` replaced; the checksum is recomputed unless given, so
    that only the check under test can catch the change."""
    data = torch.load(path, weights_only=True)
    data.update(fields)
    if "checksum" not in fields:
        data["checksum"] = checksum(data["images"], data["labels"])
    torch.save(data, path)


@pytest.fixture
def first(tmp_path):
    return built(tmp_path)


def test_cache_hit_never_decodes(data_cache, monkeypatch):
    dm = built(data_cache, val_size=0.2)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded an image"))
    again = built(data_cache, val_size=0.2)
    assert again.cache_hit and again.cache_file == dm.cache_file
    assert torch.equal(again.images, dm.images) and again.test_ids == dm.test_ids
    with pytest.raises(pytest.fail.Exception, match="decoded"):  # another size is another cache entry
        built(data_cache, image_size=24)


def test_the_file_holds_its_key_and_checksum(first):
    data = torch.load(first.cache_file, weights_only=True)
    assert data["key"] == first.cache_key()
    assert data["key"]["side"] == 16 and data["key"]["dataset"] == "synthetic_bccd"
    assert data["key"]["version"] == CACHE_VERSION and data["key"]["decoder"] == "lbam.data.bccd.crop_boxes"
    assert data["checksum"] == checksum(first.images, first.labels)


@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_corrupt_cache_is_rebuilt_with_one_warning_line(first, caplog, damage):
    good = first.cache_file.read_bytes()
    first.cache_file.write_bytes(
        {"half": good[: len(good) // 2], "empty": b"", "garbage": b"PK\x03\x04 junk"}[damage]
    )
    again, lines = rebuilt(first.cache_file.parents[1], caplog)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"synthetic_bccd: rebuilding the data cache {first.cache_file}: ")
    assert not again.cache_hit and torch.equal(again.images, first.images)
    assert again.cache_file.read_bytes() == good
    assert [p.name for p in again.cache_file.parent.iterdir()] == [again.cache_file.name]  # no temp files


def test_a_cache_of_another_size_under_this_name_is_rebuilt(tmp_path, caplog):
    """A 48 px cache copied over the 32 px one: the stored key says so."""
    small, large = built(tmp_path / "a", 32), built(tmp_path / "b", 48)
    shutil.copyfile(large.cache_file, small.cache_file)
    again, lines = rebuilt(tmp_path / "a", caplog, 32)
    assert len(lines) == 1 and "stored for another side (48, expected 32)" in lines[0]
    assert again.images.shape[-1] == 32 and torch.equal(again.images, small.images)
    assert built(tmp_path / "a", 32).cache_hit  # and the rebuilt file is used from then on


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("swap-classes", "its labels differ from the annotations'"),
        ("reorder-ids", "its sample ids differ from the dataset's"),
        ("other-source", "stored for another source"),
        ("old-version", "stored for another version"),
        ("float-images", "images are torch.float32"),
        ("one-image-short", "images are torch.uint8 ("),
        ("flipped-byte", "its pixels fail the checksum"),
        ("no-key", "not a cache of this version"),
    ],
)
def test_a_cache_that_is_not_this_data_is_rebuilt(first, caplog, change, why):
    path, data = first.cache_file, torch.load(first.cache_file, weights_only=True)
    if change == "swap-classes":  # WBC <-> RBC, consistently re-checksummed: only the index can tell
        labels = data["labels"].clone()
        labels[data["labels"] == 0], labels[data["labels"] == 1] = 1, 0
        tamper(path, labels=labels)
    elif change == "reorder-ids":
        tamper(path, ids=data["ids"][1:] + data["ids"][:1])
    elif change in ("other-source", "old-version"):
        field, value = ("source", "0" * 64) if change == "other-source" else ("version", CACHE_VERSION - 1)
        tamper(path, key={**data["key"], field: value})
    elif change == "float-images":
        tamper(path, images=data["images"].float())
    elif change == "one-image-short":
        tamper(path, images=data["images"][1:])
    elif change == "flipped-byte":
        images = data["images"].clone()
        images.view(-1)[1234] ^= 0xFF
        tamper(path, images=images, checksum=data["checksum"])
    else:
        torch.save({k: v for k, v in data.items() if k != "key"}, path)
    again, lines = rebuilt(path.parents[1], caplog)
    assert len(lines) == 1 and why in lines[0], lines
    assert not again.cache_hit and torch.equal(again.images, first.images)
    assert torch.equal(again.labels, first.labels) and again.ids == first.ids


def test_a_folder_at_the_cache_path_is_one_line(first):
    first.cache_file.unlink()
    first.cache_file.mkdir()
    with pytest.raises(DataError, match=r"the data cache .* is a folder, not a file: remove it") as err:
        built(first.cache_file.parents[1])
    assert str(first.cache_file) in str(err.value) and "\n" not in str(err.value)


def test_an_unwritable_cache_folder_is_one_line(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(
        DataError, match=r"cannot write the data cache .*: make .* writable or set LBAM_CACHE_DIR"
    ):
        SyntheticBCCDDataModule(root=tmp_path / "data", cache_dir=tmp_path / "cache", image_size=16).setup()


def test_a_changed_source_file_is_a_new_cache_entry(first, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(first.root, root)
    a = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "c2", image_size=16)
    a.setup()
    xml = root / "BCCD" / "Annotations" / "BloodImage_00005.xml"
    xml.write_text(xml.read_text() + "\n")
    b = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "c2", image_size=16, verify=False)
    b.setup()
    assert not b.cache_hit and b.cache_file != a.cache_file
