"""The BCCD twin through the real loader: VOC parsing, duplicates, the interface, the image-level split, the
loaders as the model gets them (through the batch hook)."""

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden

from lbam.data import SyntheticBCCDDataModule


@pytest.fixture(scope="module")
def bccd(data_cache):
    dm = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16, val_size=0.2)
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
    assert bccd.metadata["skipped_items"] == [  # the twin writes (50, 40, 50, 40)
        {
            "id": degenerate,
            "reason": "degenerate box (xmin=50, ymin=40, xmax=50, ymax=40): zero or negative area",
        }
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
    targets = torch.cat([bccd.transform(b, False)[1] for b in bccd.test_dataloader()]).tolist()
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
    assert sum(len(b[1]) for b in bccd.val_dataloader()) == m["n_val"] > 0
    plain = SyntheticBCCDDataModule(cache_dir=data_cache, image_size=16)
    plain.setup()
    assert plain.metadata["n_val"] == 0 and not is_overridden("val_dataloader", plain)
    assert plain.test_ids == bccd.test_ids  # val is carved from train: the test split does not move


def test_train_loader_normalised_and_augmented(bccd):
    torch.manual_seed(0)
    xs = torch.cat([bccd.transform(b, True)[0] for b in bccd.train_dataloader()])
    full = bccd.metadata["n_train"] // bccd.batch_size * bccd.batch_size
    assert xs.shape == (full, 3, 16, 16)  # full batches only
    # flips move pixels but keep per-channel statistics: train split ~ zero mean, unit std
    assert torch.allclose(xs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.02)
    assert torch.allclose(xs.std(dim=(0, 2, 3)), torch.ones(3), atol=0.02)
    seen = []
    for _ in range(2):
        torch.manual_seed(1)
        seen.append(bccd.transform(next(iter(bccd.train_dataloader())), True))
    assert torch.equal(seen[0][0], seen[1][0])  # reproducible under a seed
    torch.manual_seed(2)
    _, y3 = bccd.transform(next(iter(bccd.train_dataloader())), True)
    assert not torch.equal(seen[0][1], y3)  # shuffled per epoch
