"""The data proves what it is at every setup (issue #31): crafted copies of the real BCCD and of the twins, each
refused in one line naming what changed, unless dataset.verify=false, which the DataModule (and so the row)
records; the cache follows the content, not sizes and mtimes; a pinned test split that moved is refused; the
download says "ready" only for a complete, verified folder."""

import logging
import os
import shutil
import xml.etree.ElementTree as ET

import pytest
import torch

from lbam.data import BCCDDataModule, DataError, OxfordPetsDataModule, SyntheticBCCDDataModule
from lbam.data.__main__ import main as cli_main
from lbam.data.manifest import MANIFEST
from lbam.data.synthetic import write_bccd, write_pets


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture
def real_copy(bccd_root, tmp_path):
    """A private copy of the real BCCD (10 MB) to damage: root/BCCD."""
    shutil.copytree(
        bccd_root / "BCCD", tmp_path / "root" / "BCCD", ignore=shutil.ignore_patterns("ImageSets")
    )
    return tmp_path / "root"


def real(root, tmp_path, **kw):
    dm = BCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16, **kw)
    dm.setup()
    return dm


@pytest.mark.bccd
def test_the_real_bccd_is_verified_and_its_test_split_is_the_pinned_one(bccd_root, tmp_path):
    dm = real(bccd_root, tmp_path)
    assert dm.data_verified is True and dm.metadata["data_verified"] is True
    assert dm.cache_key()["source"] == dm.data_sha256 == dm.pinned_digest
    assert len(dm.test_ids) == 878


@pytest.mark.bccd
@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        # The trial: 12 % of the annotation files deleted gave ok rows tested on ~295 crops instead of 878.
        ("delete-12%-xml", "44 missing (Annotations/BloodImage_00000.xml, "),
        # 3 % of the XMLs were accepted (736 test crops) where 3 % of the JPEGs were refused.
        ("delete-3%-xml", "11 missing (Annotations/BloodImage_00000.xml, "),
        ("delete-12%-objects", "364 changed (Annotations/BloodImage_00000.xml, "),
        ("pixels-same-size-and-mtime", "1 changed (JPEGImages/BloodImage_00007.jpg)"),
        ("extra-xml", "1 added (Annotations/BloodImage_99999.xml)"),
    ],
)
def test_an_edited_real_bccd_is_refused_naming_what_changed(real_copy, tmp_path, damage, needle):
    voc = real_copy / "BCCD"
    xmls = sorted((voc / "Annotations").glob("*.xml"))
    if damage.startswith("delete-") and damage.endswith("xml"):
        for f in xmls[: round(len(xmls) * int(damage.split("-")[1][:-1]) / 100)]:
            f.unlink()
    elif damage == "delete-12%-objects":
        for f in xmls:
            tree = ET.parse(f)
            objects = list(tree.getroot().iter("object"))
            for obj in objects[: max(1, len(objects) // 8)]:
                tree.getroot().remove(obj)
            tree.write(f)
    elif damage == "pixels-same-size-and-mtime":
        jpg = voc / "JPEGImages" / "BloodImage_00007.jpg"
        before = jpg.stat()
        data = bytearray(jpg.read_bytes())
        data[-100] ^= 0xFF  # entropy-coded data: other pixels, same size
        jpg.write_bytes(bytes(data))
        os.utime(jpg, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        shutil.copy(xmls[0], voc / "Annotations" / "BloodImage_99999.xml")
    with pytest.raises(DataError) as err:
        real(real_copy, tmp_path)
    line = one_line(err)
    assert line.startswith(f"bccd: {voc} is not the pinned bccd content (sha256 939586f3279b…): {needle}")
    assert "dataset.verify=false" in line and "download dataset=bccd" in line
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded


@pytest.mark.bccd
def test_verify_false_trains_on_a_changed_copy_and_says_so(real_copy, tmp_path, caplog):
    """The user's choice: recorded (data_verified False), logged once, and the cache follows the new content: a JPEG
    whose pixels changed with its size and mtime kept is decoded again, never served from the stale cache."""
    clean = real(real_copy, tmp_path, verify=False)
    assert clean.data_verified is True  # the pinned content, whatever the switch says
    jpg = real_copy / "BCCD" / "JPEGImages" / "BloodImage_00007.jpg"
    before = jpg.stat()
    data = bytearray(jpg.read_bytes())
    data[-100] ^= 0xFF
    jpg.write_bytes(bytes(data))
    os.utime(jpg, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="lbam.data"):
        changed = real(real_copy, tmp_path, verify=False)
        real(real_copy, tmp_path, verify=False)  # a sweep's second run: no second line
    assert changed.data_verified is False and changed.metadata["data_verified"] is False
    assert not changed.cache_hit and changed.cache_file != clean.cache_file
    k = [i for i, s in enumerate(changed.ids) if s.startswith("BloodImage_00007#")]
    assert not torch.equal(changed.images[k], clean.images[k])  # the new pixels, not the cached ones
    lines = [r.getMessage() for r in caplog.records if "dataset.verify=false" in r.getMessage()]
    assert len(lines) == 1 and "1 changed (JPEGImages/BloodImage_00007.jpg)" in lines[0]


@pytest.mark.bccd
def test_a_test_split_that_moved_is_refused(bccd_root, tmp_path, monkeypatch):
    """The content is pinned and the split options are the default: a planner that changed the test set (code,
    not data) must not go unnoticed."""
    monkeypatch.setitem(BCCDDataModule.pinned_test_splits, ("image", 0, 4000, None, True), "0" * 16)
    with pytest.raises(DataError) as err:
        real(bccd_root, tmp_path)
    line = one_line(err)
    assert (
        "the test split (878 crops, digest ef5224e56839b489) is not the pinned one (0000000000000000)" in line
    )
    assert "split_by=image, split_seed=0, train_size=4000, test_size=None, drop_duplicates=True" in line


@pytest.fixture
def twin(tmp_path):
    return write_bccd(tmp_path / "twin", n_images=12).parent


def test_a_twin_is_checked_against_the_manifest_written_with_it(twin, tmp_path, caplog):
    dm = SyntheticBCCDDataModule(root=twin, cache_dir=tmp_path / "c", image_size=16)
    dm.setup()
    assert dm.data_verified is True and (twin / "BCCD" / MANIFEST).is_file()
    (twin / "BCCD" / "Annotations" / "BloodImage_00003.xml").unlink()
    with pytest.raises(DataError) as err:
        SyntheticBCCDDataModule(root=twin, cache_dir=tmp_path / "c", image_size=16).setup()
    assert "1 missing (Annotations/BloodImage_00003.xml)" in one_line(err)
    with caplog.at_level(logging.WARNING, logger="lbam.data"):
        taken = SyntheticBCCDDataModule(root=twin, cache_dir=tmp_path / "c", image_size=16, verify=False)
        taken.setup()
    assert taken.data_verified is False and any(
        "data_verified: false" in r.getMessage() for r in caplog.records
    )


def test_a_folder_without_a_manifest_is_unverified_in_one_line(tmp_path, caplog):
    """A user's own copy of Oxford-IIIT Pet (not downloaded by lbam): nothing pins it, and the row says so."""
    pets = write_pets(tmp_path / "data")
    (pets / MANIFEST).unlink()
    dm = OxfordPetsDataModule(
        root=tmp_path / "data", cache_dir=tmp_path / "c", image_size=16, train_size=0.75
    )
    with caplog.at_level(logging.WARNING, logger="lbam.data"):
        dm.setup()
    assert dm.data_verified is None
    (line,) = [r.getMessage() for r in caplog.records if "no manifest" in r.getMessage()]
    assert line.startswith(f"oxford_pets: {pets} has no manifest (SHA256SUMS") and "\n" not in line


def test_an_unreadable_manifest_is_one_line(twin, tmp_path):
    (twin / "BCCD" / MANIFEST).write_text("not a manifest\n")
    with pytest.raises(
        DataError, match=r"the manifest .*SHA256SUMS is line 1 is not '<sha256>  <path>'"
    ) as err:
        SyntheticBCCDDataModule(root=twin, cache_dir=tmp_path / "c", image_size=16).setup()
    one_line(err)


@pytest.mark.parametrize("shape", ["empty", "annotations-only", "jpeg-link-loop"])
def test_download_never_says_ready_for_an_incomplete_folder(tmp_path, monkeypatch, capsys, shape):
    """The trial: `download` said "ready" for an empty BCCD/ and for a JPEGImages link loop, which training then
    said to fix by downloading. Both now name the folder and say to remove it first."""
    voc = tmp_path / "BCCD"
    voc.mkdir()
    if shape != "empty":
        (voc / "Annotations").mkdir()
    if shape == "jpeg-link-loop":
        os.symlink("JPEGImages", voc / "JPEGImages")
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(
        "lbam.data.download.fetch", lambda *a: pytest.fail("downloaded into a present folder")
    )
    assert cli_main(["download", "dataset=bccd"]) == 1
    out, err = capsys.readouterr()
    assert "ready" not in out
    missing = "Annotations, JPEGImages" if shape == "empty" else "JPEGImages"
    assert err.strip().splitlines() == [
        f"error: bccd: the dataset folder {voc} lacks {missing} (an empty or partly deleted folder, or a broken or "
        f"looping link): remove it (rm -r {voc}) and run `python -m lbam.data download dataset=bccd`, or point "
        "LBAM_DATA_DIR at a complete copy"
    ]
    dm = BCCDDataModule(root=tmp_path, cache_dir=tmp_path / "c", image_size=16)
    with pytest.raises(DataError, match="lacks"):  # training gives the same advice, not "download it"
        dm.setup()


def test_download_says_ready_only_once_verified(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_CACHE_DIR", str(tmp_path / "cache"))
    assert cli_main(["download", "dataset=synthetic_bccd", f"dataset.root={tmp_path}"]) == 0
    assert capsys.readouterr().out.strip().endswith("BCCD (content verified)")
    (tmp_path / "BCCD" / "JPEGImages" / "BloodImage_00002.jpg").write_bytes(b"")
    assert cli_main(["download", "dataset=synthetic_bccd", f"dataset.root={tmp_path}"]) == 1
    out, err = capsys.readouterr()
    assert not out and "1 changed (JPEGImages/BloodImage_00002.jpg)" in err and len(err.splitlines()) == 1


def test_the_pinned_manifest_ships_with_the_package():
    import fnmatch
    from pathlib import Path

    import tomllib

    from lbam.data.bccd import BCCD_MANIFEST

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert BCCD_MANIFEST.is_file() and any(
        fnmatch.fnmatch(BCCD_MANIFEST.name, p) for p in patterns["lbam.data"]
    )


@pytest.mark.slow
def test_the_row_records_a_run_on_data_taken_as_it_is(twin, tmp_path, data_cache):
    from tests.test_train import run, tiny

    xml = twin / "BCCD" / "Annotations" / "BloodImage_00004.xml"
    xml.write_text(xml.read_text().replace("</annotation>", "<!-- edited -->\n</annotation>"))
    overrides = tiny(
        tmp_path, data_cache, "attention=none", f"dataset.root={twin}", "dataset.train_size=0.75"
    )
    with pytest.raises(DataError, match=r"1 changed \(Annotations/BloodImage_00004\.xml\)"):
        run(overrides)
    row = run([*overrides, "dataset.verify=false"])
    assert row["status"] == "ok" and row["data_verified"] is False
    assert "dataset.verify=false" not in row["overrides"]  # the same run: the row's field says how it ran
