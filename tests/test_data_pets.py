"""Oxford-IIIT Pet loader: every readable image of any size loads, labels from the species column, the twin."""

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch

from lbam.data import DataError, OxfordPetsDataModule, SyntheticPetsDataModule
from lbam.data.oxford_pets import CROP_FRACTION, decode_pets, index_pets, load_rgb
from lbam.data.synthetic import PETS_SPECIAL

# Stored sides the configs use: 224 (full), 64 (quick profile), 32 (synthetic twin), each / 0.875.
SIDES = sorted({round(s / CROP_FRACTION) for s in (224, 64, 32)})
# Sizes (w, h) that broke the float crop box, then every aspect ratio from 1:3 to 3:1 in small steps.
REPORTED = [(412, 480), (300, 249), (392, 500)]
RATIOS = [(w, h) for h in (120, 249, 480) for w in range(h // 3, 3 * h + 1, max(1, h // 24))]


def write_jpeg(path, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=g).numpy()
    PIL.Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sizes")
    return [(size, write_jpeg(folder / f"{size[0]}x{size[1]}.jpg", size)) for size in REPORTED + RATIOS]


def test_every_size_and_aspect_ratio_loads_at_every_stored_side(jpegs):
    assert SIDES == [37, 73, 256] and len(RATIOS) > 100
    assert {w / h for w, h in RATIOS} >= {1 / 3, 3.0}
    for side in SIDES:
        for size, path in jpegs:
            im = load_rgb(path, side)
            assert im.size == (side, side) and im.mode == "RGB", (size, side)


def test_centre_crop_takes_the_middle_square(tmp_path):
    # left third red, middle third green, right third blue: the centre square of a 3:1 image is all green
    pixels = torch.zeros(60, 180, 3, dtype=torch.uint8)
    pixels[:, :60, 0] = pixels[:, 60:120, 1] = pixels[:, 120:, 2] = 255
    path = tmp_path / "wide.png"
    PIL.Image.fromarray(pixels.numpy()).save(path)
    x = torch.from_numpy(np.array(load_rgb(path, 30))).float()
    assert x[..., 1].mean() > 250 and x[..., 0].mean() < 5 and x[..., 2].mean() < 5


def write_pets_folder(root, sizes):
    """An Oxford-IIIT Pet layout with one readable JPEG per size, alternating cats and dogs."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    lines = []
    for k, size in enumerate(sizes):
        cat = k % 2 == 0
        image_id = f"{'Bengal' if cat else 'beagle'}_{k}"
        write_jpeg(base / "images" / f"{image_id}.jpg", size, seed=k)
        lines.append(f"{image_id} {1 if cat else 2} {1 if cat else 2} 1\n")
    (base / "annotations" / "trainval.txt").write_text("".join(lines))
    return base


def test_a_list_of_n_readable_images_gives_n_samples(tmp_path, recwarn):
    sizes = REPORTED + RATIOS[::8]
    write_pets_folder(tmp_path, sizes)
    dm = OxfordPetsDataModule(root=tmp_path, cache_dir=tmp_path / "cache", image_size=64, train_size=0.5)
    dm.setup()
    assert len(dm.ids) == len(sizes) and dm.metadata["skipped"] == 0 and not recwarn.list
    assert dm.metadata["n_train"] + dm.metadata["n_test"] == len(sizes)
    assert dm.images.shape[1:] == (3, 73, 73)


def test_only_decoder_errors_count_as_unreadable(tmp_path, monkeypatch):
    base = write_pets_folder(tmp_path, REPORTED)
    (base / "images" / "beagle_1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    index = index_pets(base)
    data = decode_pets(base, index, 37)
    assert data["ids"] == ["Bengal_0", "Bengal_2"]
    assert data["skipped"] == [{"id": "beagle_1", "reason": data["skipped"][0]["reason"], "samples": 1}]
    assert data["skipped"][0]["reason"].startswith("unreadable beagle_1.jpg: ")

    def bug(*args, **kwargs):
        raise ValueError("box offset can't be negative")

    monkeypatch.setattr(PIL.Image.Image, "resize", bug)
    with pytest.raises(ValueError, match="box offset"):  # a code bug surfaces, it is not a bad file
        decode_pets(base, index, 37)


def test_missing_and_empty_files_are_skipped_at_index_time(tmp_path):
    base = write_pets_folder(tmp_path, [*REPORTED, (50, 50)])
    (base / "images" / "beagle_1.jpg").unlink()
    (base / "images" / "beagle_3.jpg").write_bytes(b"")
    index = index_pets(base)
    assert index.ids == ["Bengal_0", "Bengal_2"] and index.n_sources == 4
    assert [s["id"] for s in index.skipped] == ["beagle_1", "beagle_3"]


def test_bad_list_line_and_too_large_sizes_are_one_line_errors(tmp_path, monkeypatch):
    base = write_pets_folder(tmp_path, REPORTED * 4)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded an image"))
    dm = OxfordPetsDataModule(root=tmp_path, cache_dir=tmp_path / "cache", image_size=32, train_size=3000)
    with pytest.raises(DataError, match=r"train_size=3000.*12 are usable"):
        dm.setup()
    (base / "annotations" / "trainval.txt").write_text("Bengal_0 1 3 1\n")
    with pytest.raises(DataError, match=r"trainval.txt:1: expected .*species 1\|2") as err:
        index_pets(base)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def pets(data_cache):
    dm = SyntheticPetsDataModule(cache_dir=data_cache, image_size=32)
    dm.prepare_data()
    dm.setup()
    return dm


def test_twin_layout_is_the_official_one(pets):
    ann = pets.dataset_dir() / "annotations"
    header = [line for line in (ann / "list.txt").read_text().splitlines() if line.startswith("#")]
    assert header[0].startswith("#Image CLASS-ID SPECIES BREED ID") and len(header) == 6
    assert (ann / "test.txt").is_file()
    assert (pets.dataset_dir() / "images" / "Abyssinian_1.jpg").is_file()


def test_twin_labels_come_from_species_column(pets):
    species = {}
    for line in (pets.dataset_dir() / "annotations" / "trainval.txt").read_text().splitlines():
        image_id, _, sp, _ = line.split()
        species[image_id] = int(sp) - 1
    assert pets.name == "synthetic_pets" and pets.is_synthetic and pets.metadata["synthetic"]
    assert pets.class_names == ["cat", "dog"]
    assert len(pets.ids) == len(species) - 1  # all but the corrupt file
    for image_id, label in zip(pets.ids, pets.labels.tolist()):
        assert label == species[image_id]
        assert label == (0 if image_id[0].isupper() else 1)  # cat breeds are capitalised
    assert pets.metadata["images"]["test"] == pets.metadata["n_test"]  # one sample per image


def test_twin_non_rgb_converted_and_corrupt_skipped(pets):
    for image_id, mode in PETS_SPECIAL.items():
        if mode == "corrupt":
            assert image_id not in pets.ids
        else:
            assert PIL.Image.open(pets.dataset_dir() / "images" / f"{image_id}.jpg").mode == mode
            assert image_id in pets.ids
    gray = pets.images[pets.ids.index("Abyssinian_1")].int()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert pets.images.shape[1:] == (3, pets.stored_size, pets.stored_size) and pets.stored_size == 37
    assert pets.metadata["skipped"] == 1
    assert pets.metadata["skipped_items"][0]["id"] == "British_Shorthair_1"


def test_twin_loaders_crop_to_image_size(pets):
    x, y = pets.transform(next(iter(pets.train_dataloader())), True)
    assert x.shape == (pets.batch_size, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, _ = pets.transform(next(iter(pets.test_dataloader())), False)
    assert xt.shape[1:] == (3, 32, 32)
    xt2, _ = pets.transform(next(iter(pets.test_dataloader())), False)
    assert torch.equal(xt, xt2)


def test_a_decompression_bomb_is_skipped_as_unreadable(tmp_path):
    base = write_pets_folder(tmp_path, REPORTED)
    path = base / "images" / "beagle_1.jpg"
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # the frame header: declare 30000x30000 pixels
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    out = decode_pets(base, index_pets(base), 37)
    assert out["ids"] == ["Bengal_0", "Bengal_2"]
    assert out["skipped"][0]["reason"].startswith(
        "unreadable beagle_1.jpg: DecompressionBombError: Image size"
    )


def test_an_unreadable_list_is_one_line(tmp_path):
    base = write_pets_folder(tmp_path, REPORTED)
    (base / "annotations" / "trainval.txt").write_bytes(b"Bengal_0 1 1 1\n\xff\xfe\xfa broken\n")
    with pytest.raises(DataError, match=r"trainval.txt: cannot be read as text \(UnicodeDecodeError") as err:
        index_pets(base)
    assert "\n" not in str(err.value)
