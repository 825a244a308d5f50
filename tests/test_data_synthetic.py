"""The BCCD twin through the real loader: VOC parsing, duplicates, bad files, the cache, the loaders."""

import json
import shutil
import xml.etree.ElementTree as ET

import PIL.ImageFile
import pytest
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden

from lbam.data import DataError, SyntheticBCCDDataModule
from lbam.data.base import random_resized_crop
from lbam.data.synthetic import write_bccd


@pytest.fixture(scope="module")
def bccd(data_cache):
    dm = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, val_size=0.2)
    with pytest.warns(UserWarning, match=r"skipped 1 item"):
        dm.setup()
    return dm


def boxes_in_xml(folder):
    """(id, name) of every <object> in the twin's XMLs, parsed here independently of the loader."""
    out = []
    for f in sorted((folder / "Annotations").glob("*.xml")):
        for k, obj in enumerate(ET.parse(f).getroot().iter("object")):
            out.append((f"{f.stem}#{k}", obj.findtext("name").strip()))
    return out


def test_twin_parsed_with_varied_whitespace_and_class_mix(bccd):
    xml = (bccd.dataset_dir() / "Annotations" / "BloodImage_00000.xml").read_text()
    assert "<name> RBC </name>" in xml and "<name>\n" in xml
    assert bccd.name == "synthetic_bccd" and bccd.is_synthetic and bccd.metadata["synthetic"]
    boxes = boxes_in_xml(bccd.dataset_dir())
    n0 = sum(i.startswith("BloodImage_00000#") for i, _ in boxes)  # its last two: degenerate, past the border
    degenerate, clipped = f"BloodImage_00000#{n0 - 2}", f"BloodImage_00000#{n0 - 1}"
    assert bccd.metadata["skipped_items"] == [
        {"id": degenerate, "reason": "empty box after clipping to the image"}
    ]
    assert len(bccd.ids) == len(boxes) - 1 and clipped in bccd.ids
    by_id = dict(boxes)
    assert [by_id[i] for i in bccd.ids] == [bccd.class_names[y] for y in bccd.labels.tolist()]
    # the images differ in class mix, so the image-level split has strata to balance
    mixes = {tuple(sorted(n for i, n in boxes if i.startswith(f"BloodImage_{k:05d}#"))) for k in range(40)}
    assert len(mixes) > 10


def test_interface_before_and_after_setup(bccd, tmp_path):
    fresh = SyntheticBCCDDataModule(root=tmp_path / "nowhere", cache_dir=tmp_path / "cache", val_size=0.2)
    assert (fresh.name, fresh.is_synthetic, fresh.num_classes) == ("synthetic_bccd", True, 3)
    assert fresh.class_names == ["WBC", "RBC", "Platelets"] and not (tmp_path / "nowhere").exists()
    spec = fresh.describe()
    assert spec["_target_"] == "lbam.data.synthetic.SyntheticBCCDDataModule"
    assert spec["split_by"] == "image" and spec["drop_duplicates"] is True and spec["train_subset"] is None
    assert not {"root", "cache_dir", "num_workers", "pin_memory", "download"} & set(spec)
    m = json.loads(json.dumps(bccd.metadata))  # JSON-serialisable as it is
    assert m["class_counts"]["test"] == bccd.metadata["class_counts"]["test"]
    ids = bccd.train_ids + bccd.val_ids + bccd.test_ids
    assert len(ids) == len(set(ids)) == m["n_total"]
    assert [len(bccd.mean), len(bccd.std)] == [3, 3] and all(0 < v < 1 for v in bccd.mean + bccd.std)
    targets = torch.cat([y for _, y in bccd.test_dataloader()]).tolist()
    assert targets == [bccd.labels[bccd.ids.index(i)].item() for i in bccd.test_ids]  # loader order


def test_twin_duplicate_is_found_and_dropped(bccd, data_cache):
    m = bccd.metadata
    assert m["duplicates"] == 1 and m["duplicate_items"][0]["id"].startswith("BloodImage_00001#")
    assert m["duplicate_items"][0]["of"] == "BloodImage_00001#0" and m["duplicate_items"][0]["iou"] > 0.9
    dup = m["duplicate_items"][0]["id"]
    assert dup in bccd.ids  # decoded and cached, ...
    assert dup not in bccd.train_ids + bccd.val_ids + bccd.test_ids  # ... but in no split
    assert m["n_total"] == len(bccd.ids) - 1
    keep = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, drop_duplicates=False)
    with pytest.warns(UserWarning):
        keep.setup()
    assert dup in keep.train_ids + keep.test_ids and keep.metadata["n_total"] == len(bccd.ids)


def test_image_split_and_val_by_image(bccd, data_cache):
    m = bccd.metadata
    sides = [{i.split("#")[0] for i in ids} for ids in (bccd.train_ids, bccd.val_ids, bccd.test_ids)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert m["images"] == {"train": len(sides[0]), "val": len(sides[1]), "test": len(sides[2])}
    assert m["n_train"] + m["n_val"] + m["n_test"] == m["n_total"]
    assert m["n_train"] + m["n_val"] == m["n_train_split"]
    assert is_overridden("val_dataloader", bccd)
    assert sum(len(y) for _, y in bccd.val_dataloader()) == m["n_val"] > 0
    plain = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16)
    with pytest.warns(UserWarning):
        plain.setup()
    assert plain.metadata["n_val"] == 0 and not is_overridden("val_dataloader", plain)
    assert plain.test_ids == bccd.test_ids  # val is carved from train: the test split does not move


def test_train_loader_normalised_and_augmented(bccd):
    torch.manual_seed(0)
    xs = torch.cat([x for x, _ in bccd.train_dataloader()])
    assert xs.shape[1:] == (3, 16, 16) and len(xs) >= bccd.metadata["n_train"] - 1
    # flips move pixels but keep per-channel statistics: train split ~ zero mean, unit std
    assert torch.allclose(xs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.02)
    assert torch.allclose(xs.std(dim=(0, 2, 3)), torch.ones(3), atol=0.02)
    seen = []
    for _ in range(2):
        torch.manual_seed(1)
        seen.append(next(iter(bccd.train_dataloader())))
    assert torch.equal(seen[0][0], seen[1][0])  # reproducible under a seed
    torch.manual_seed(2)
    _, y3 = next(iter(bccd.train_dataloader()))
    assert not torch.equal(seen[0][1], y3)  # shuffled per epoch


def test_cache_hit_never_decodes(bccd, data_cache, monkeypatch):
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded an image"))
    again = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, val_size=0.2)
    with pytest.warns(UserWarning):
        again.setup()
    assert again.cache_hit and again.cache_file == bccd.cache_file
    assert torch.equal(again.images, bccd.images) and again.test_ids == bccd.test_ids
    bigger = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=24)
    with pytest.raises(pytest.fail.Exception, match="decoded"):  # another size is another cache entry
        bigger.setup()


@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    dm = SyntheticBCCDDataModule(cache_dir=tmp_path, image_size=16)
    with pytest.warns(UserWarning):
        dm.setup()
    good = dm.cache_file.read_bytes()
    dm.cache_file.write_bytes(
        {"half": good[: len(good) // 2], "empty": b"", "garbage": b"PK\x03\x04 junk"}[damage]
    )
    again = SyntheticBCCDDataModule(cache_dir=tmp_path, image_size=16)
    with pytest.warns(UserWarning, match="rebuilding the corrupt data cache"):
        again.setup()
    assert not again.cache_hit and torch.equal(again.images, dm.images)
    assert again.cache_file.read_bytes() == good
    assert [p.name for p in again.cache_file.parent.iterdir()] == [again.cache_file.name]  # no temp files


@pytest.fixture(scope="module")
def twin100(tmp_path_factory):
    return write_bccd(tmp_path_factory.mktemp("twin") / "clean", n_images=100)


def damaged(twin, tmp_path, *damages):
    """A copy of the 100-image twin with the named damages applied."""
    root = tmp_path / "root"
    shutil.copytree(twin, root / "BCCD")
    d = root / "BCCD"
    jpg = lambda k: d / "JPEGImages" / f"BloodImage_{k:05d}.jpg"  # noqa: E731
    xml = lambda k: d / "Annotations" / f"BloodImage_{k:05d}.xml"  # noqa: E731
    for damage in damages:
        if damage == "truncated":
            jpg(10).write_bytes(jpg(10).read_bytes()[:-600])  # header intact, pixels cut
        elif damage == "malformed":
            xml(11).write_text(xml(11).read_text()[:-40])
        elif damage == "no-bndbox":
            text = xml(12).read_text()
            start, end = text.index("<bndbox>"), text.index("</bndbox>") + len("</bndbox>")
            xml(12).write_text(text[:start] + text[end:])
        elif damage == "zero-bytes":
            jpg(13).write_bytes(b"")
        elif damage == "missing":
            jpg(14).unlink()
        elif damage.startswith("zero-bytes-"):
            jpg(int(damage.rsplit("-", 1)[1])).write_bytes(b"")
        elif damage == "unknown-class":
            xml(15).write_text(xml(15).read_text().replace("WBC", "Neutrophil", 1))
    return root


def test_bad_files_are_skipped_counted_and_named(twin100, tmp_path):
    root = damaged(twin100, tmp_path, "truncated", "malformed", "no-bndbox", "zero-bytes", "missing")
    dm = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16)
    with pytest.warns(UserWarning, match=r"skipped 6 item\(s\)"):
        dm.setup()
    reasons = {s["id"]: s["reason"] for s in dm.metadata["skipped_items"]}
    assert len(reasons) == 6  # the five damages and the twin's own degenerate box
    assert reasons["BloodImage_00010"].startswith(
        "unreadable BloodImage_00010.jpg: OSError: image file is truncated"
    )
    assert reasons["BloodImage_00011"].startswith("malformed BloodImage_00011.xml:")
    assert reasons["BloodImage_00012#0"] == "object without a complete <bndbox>"
    assert reasons["BloodImage_00013"].startswith("unreadable BloodImage_00013.jpg: UnidentifiedImageError")
    assert reasons["BloodImage_00014"] == "BloodImage_00014.xml names a missing image BloodImage_00014.jpg"
    images = {i.split("#")[0] for i in dm.train_ids + dm.test_ids}
    assert len(images) == 96 and not {f"BloodImage_{k:05d}" for k in (10, 11, 13, 14)} & images
    assert "BloodImage_00012#1" in dm.ids and "BloodImage_00012#0" not in dm.ids
    assert dm.metadata["n_images"] == 100


def test_a_changed_source_file_is_a_new_cache_entry(twin100, tmp_path):
    root = damaged(twin100, tmp_path)  # an untouched copy
    first = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16)
    with pytest.warns(UserWarning):
        first.setup()
    xml = root / "BCCD" / "Annotations" / "BloodImage_00005.xml"
    xml.write_text(xml.read_text() + "\n")
    again = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16)
    with pytest.warns(UserWarning):
        again.setup()
    assert not again.cache_hit and again.cache_file != first.cache_file


def test_too_many_bad_files_refuse_the_dataset(twin100, tmp_path):
    root = damaged(twin100, tmp_path, *(f"zero-bytes-{k}" for k in range(20, 26)))  # 6 of 100 > 5 %
    dm = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16)
    with pytest.raises(DataError, match=r"6 of 100 source images in .* are unusable \(more than 5%\)") as err:
        dm.setup()
    assert "\n" not in str(err.value) and "download dataset=synthetic_bccd" in str(err.value)


def test_unknown_class_is_a_hard_error_naming_the_file(twin100, tmp_path):
    root = damaged(twin100, tmp_path, "unknown-class")
    dm = SyntheticBCCDDataModule(root=root, cache_dir=tmp_path / "cache", image_size=16)
    with pytest.raises(DataError, match=r"BloodImage_00015\.xml: unknown class 'Neutrophil'"):
        dm.setup()


def test_random_resized_crop_shapes_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    out = random_resized_crop(x, 4, (0.5, 1.0), hflip=True)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    half = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    half[..., 4:] = 255  # dark left, bright right
    kept = random_resized_crop(half, 8, (1.0, 1.0), hflip=False)
    assert (kept[..., 0].mean(dim=(1, 2)) < kept[..., -1].mean(dim=(1, 2))).all()
    torch.manual_seed(0)
    flipped = random_resized_crop(half, 8, (1.0, 1.0), hflip=True)
    left_bright = (flipped[..., 0].mean(dim=(1, 2)) > flipped[..., -1].mean(dim=(1, 2))).sum().item()
    assert 10 < left_bright < 54  # about half the batch mirrored
