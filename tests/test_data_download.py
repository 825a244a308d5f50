"""Download hardening without a network: clear offline error, checksums, unsafe archives, atomic install, CLI."""

import hashlib
import io
import os
import socket
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from lbam.data import (
    BCCDDataModule,
    DataError,
    DatasetNotFoundError,
    OxfordPetsDataModule,
    SyntheticBCCDDataModule,
)
from lbam.data import download as dl
from lbam.data.__main__ import main as cli_main
from lbam.data.bccd import BCCD_CONTENT_SHA256, BCCD_URL, content_digest, pick_voc
from lbam.data.oxford_pets import PETS_SOURCES
from lbam.data.synthetic import write_bccd, write_pets


@pytest.fixture
def offline(monkeypatch):
    """Every name lookup fails at once, as on a machine without network."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


def test_offline_download_gives_the_clear_error(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path))
    dm = BCCDDataModule(root=tmp_path, cache_dir=tmp_path / "cache", download=True)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "BCCD") in msg and BCCD_URL in msg and "\n" not in msg
    assert (
        f"LBAM_DATA_DIR={tmp_path}" in msg and "Name or service not known" in msg and "paths.data_dir" in msg
    )
    assert "python -m lbam.data download dataset=bccd" in msg
    assert isinstance(err.value, DataError)
    assert os.listdir(tmp_path) == []  # no partial folder left behind


def test_downloads_use_a_short_timeout(tmp_path, monkeypatch):
    seen = {}

    def fake_urlopen(request, timeout=None):
        seen["timeout"] = timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DatasetNotFoundError, match="timed out"):
        OxfordPetsDataModule(root=tmp_path, cache_dir=tmp_path, download=True).prepare_data()
    assert seen["timeout"] is not None and seen["timeout"] <= 30


def test_no_download_when_disabled(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        BCCDDataModule(root=tmp_path, cache_dir=tmp_path, download=False).prepare_data()
    with pytest.raises(DatasetNotFoundError, match="oxford-iiit-pet"):
        OxfordPetsDataModule(root=tmp_path, cache_dir=tmp_path).setup()


def test_pets_sources_are_torchvisions():
    from torchvision.datasets import OxfordIIITPet

    assert [(s.url, s.digest, s.algo) for s in PETS_SOURCES] == [
        (url, md5, "md5") for url, md5 in OxfordIIITPet._RESOURCES
    ]


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for member, data in members:
            if data is not None:
                member.size = len(data)
            tf.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


CRAFTED = {
    "dotdot": [(tarfile.TarInfo("sub/../../evil.txt"), b"x")],
    "absolute": [(tarfile.TarInfo("/tmp/lbam-evil.txt"), b"x")],
    "symlink": [_link("link", "../../etc")],
    "absolute-symlink": [_link("link", "/etc")],
    "hardlink": [_link("hard", "../evil.txt", tarfile.LNKTYPE)],
    # each member looks harmless on its own: the link resolves inside, the path is lexically inside
    "link-then-dotdot": [_link("d", "."), (tarfile.TarInfo("d/../evil.txt"), b"x")],
    # re-pointing a checked link: c -> sub, a -> c/.. (= root), then c -> . would make a -> outside
    "relink": [_link("c", "sub"), _link("a", "c/.."), _link("c", "."), (tarfile.TarInfo("a/evil.txt"), b"x")],
    "device": [(tarfile.TarInfo("dev"), None)],
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["filter", "no-filter"])
@pytest.mark.parametrize("kind", list(CRAFTED))
def test_unsafe_tar_is_refused(tmp_path, monkeypatch, kind, data_filter):
    if not data_filter:  # Python before 3.11.4 has no tarfile data filter: our own checks must hold alone
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    members = [(tarfile.TarInfo("ok.txt"), b"fine"), *CRAFTED[kind]]
    if kind == "device":
        members[1][0].type = tarfile.CHRTYPE
    target = tmp_path / "out"
    archive = _tar(tmp_path / "a.tar", members)
    with pytest.raises(dl.UnsafeArchiveError, match=r"escapes|device|overwrites") as err:
        dl.safe_extract(archive, target)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/lbam-evil.txt").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_unsafe_zip_is_refused_and_safe_archives_extract(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(dl.UnsafeArchiveError, match="escapes"):
        dl.safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    link = zipfile.ZipInfo("link")
    link.external_attr = 0o120777 << 16  # a symlink, which zipfile would write as a plain file
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(link, "/etc")
    with pytest.raises(dl.UnsafeArchiveError, match="is a symlink"):
        dl.safe_extract(bad, tmp_path / "out2")
    good = _tar(tmp_path / "good.tar", [(tarfile.TarInfo("d/ok.txt"), b"fine")])
    dl.safe_extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "ok.txt").read_bytes() == b"fine"


@pytest.fixture(scope="module")
def bccd_zip(tmp_path_factory):
    """A GitHub-style archive (BCCD_Dataset-<sha>/BCCD/...) of the synthetic BCCD, served via file://."""
    work = tmp_path_factory.mktemp("zip")
    src = write_bccd(work / "src", n_images=3)
    archive = work / "bccd.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, "BCCD_Dataset-abc/BCCD/" + f.relative_to(src).as_posix())
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def _install(archive, digest, target, expected_images=3):
    def pick(staging):
        folder = next(staging.glob("*/BCCD"))
        if len(list(folder.glob("JPEGImages/*.jpg"))) != expected_images:
            raise OSError("wrong image count")
        return folder

    return dl.install("bccd", [dl.Source(archive.as_uri(), digest)], target, pick)


def test_install_verifies_checksum_and_renames_atomically(tmp_path, bccd_zip):
    archive, digest = bccd_zip
    with pytest.raises(DatasetNotFoundError, match="sha256 mismatch"):
        _install(archive, "0" * 64, tmp_path / "BCCD")
    with pytest.raises(DatasetNotFoundError, match="rejected: wrong image count"):
        _install(archive, digest, tmp_path / "BCCD", expected_images=364)
    assert os.listdir(tmp_path) == []  # nothing that looks like a dataset, no temp folder
    target = _install(archive, digest, tmp_path / "BCCD")
    assert sorted(p.name for p in target.iterdir()) == [
        "Annotations",
        "ImageSets",
        "JPEGImages",
        "SHA256SUMS",
    ]
    assert os.listdir(tmp_path) == ["BCCD"]


def test_bccd_archive_layout_count_and_content_are_checked(tmp_path, bccd_zip, monkeypatch):
    dl.safe_extract(bccd_zip[0], tmp_path / "x")
    with pytest.raises(OSError, match=r"incomplete: 3 annotations, 3 images \(expected 364\)"):
        pick_voc(tmp_path / "x")
    monkeypatch.setattr("lbam.data.bccd.BCCD_IMAGES", 3)
    voc = tmp_path / "x" / "BCCD_Dataset-abc" / "BCCD"
    with pytest.raises(
        OSError, match=r"BCCD content sha256 mismatch: got [0-9a-f]{64}, expected " + BCCD_CONTENT_SHA256
    ):
        pick_voc(tmp_path / "x")  # the twin is not the pinned BCCD
    monkeypatch.setattr("lbam.data.bccd.BCCD_CONTENT_SHA256", content_digest(voc))
    assert pick_voc(tmp_path / "x") == voc
    (voc / "Annotations" / "BloodImage_00001.xml").write_text("<annotation/>")  # one file changed
    with pytest.raises(OSError, match="content sha256 mismatch"):
        pick_voc(tmp_path / "x")
    with pytest.raises(OSError, match="layout unexpected"):
        pick_voc(tmp_path / "x" / "BCCD_Dataset-abc")


def test_content_digest_covers_names_and_bytes(tmp_path):
    voc = write_bccd(tmp_path / "a", n_images=2)
    before = content_digest(voc)
    assert before == content_digest(voc) and len(before) == 64
    jpg = voc / "JPEGImages" / "BloodImage_00000.jpg"
    jpg.rename(voc / "JPEGImages" / "BloodImage_00009.jpg")
    renamed = content_digest(voc)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("not part of the content")
    assert renamed != before and content_digest(voc) == renamed


def test_pets_archives_install_side_by_side_and_both_are_needed(tmp_path, monkeypatch):
    """The two Oxford-IIIT Pet archives (images/, annotations/) extract into one folder that then loads."""
    twin = write_pets(tmp_path / "src")
    archives = []
    for part in ("images", "annotations"):
        with tarfile.open(tmp_path / f"{part}.tar.gz", "w:gz") as tf:
            tf.add(twin / part, arcname=part)
        archives.append(dl.Source((tmp_path / f"{part}.tar.gz").as_uri()))
    monkeypatch.setattr("lbam.data.oxford_pets.PETS_SOURCES", archives[:1])
    kw = {"cache_dir": tmp_path, "image_size": 32, "train_size": 0.75, "download": True}
    (tmp_path / "data").mkdir()
    dm = OxfordPetsDataModule(root=tmp_path / "data", **kw)
    with pytest.raises(DatasetNotFoundError, match=r"incomplete: need images and annotations/trainval\.txt"):
        dm.prepare_data()
    monkeypatch.setattr("lbam.data.oxford_pets.PETS_SOURCES", archives)
    dm.prepare_data()
    # The download writes the manifest of what its checked archives held: every later setup verifies against it.
    assert sorted(p.name for p in dm.dataset_dir().iterdir()) == ["SHA256SUMS", "annotations", "images"]
    dm.setup()
    assert dm.metadata["n_total"] == 95 and dm.metadata["skipped_items"][0]["id"] == "British_Shorthair_1"
    assert dm.data_verified is True


def test_read_only_data_dir_is_left_alone(tmp_path, bccd_zip):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DatasetNotFoundError, match="read-only"):
            _install(*bccd_zip, ro / "BCCD")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LBAM_CACHE_DIR", str(tmp_path / "cache"))
    cases = [
        (["info", "dataset=bccd"], 1, [str(tmp_path / "BCCD"), "LBAM_DATA_DIR", BCCD_URL]),
        (["info", "dataset=synthetic_bccd", "dataset.train_size=5000"], 1, ["train_size=5000", "are usable"]),
        (["info", "dataset=synthetic_bccd", "dataset.split_seed=-1"], 1, ["split_seed must be an int >= 0"]),
        (["info", "dataset=synthetic_bccd", "+dataset.bogus=1"], 1, ["invalid dataset config", "bogus"]),
        (["info", "dataset=nope"], 2, ["Could not find 'dataset/nope'", "usage:"]),
    ]
    for argv, code, parts in cases:
        assert cli_main(argv) == code, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert all(p in err for p in parts), (argv, err)
    assert cli_main(["frobnicate"]) == 2


def test_cli_info_prints_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_CACHE_DIR", str(tmp_path))
    assert cli_main(["info", "dataset=synthetic_bccd", "dataset.val_size=0.1"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["dataset"] == ["synthetic_bccd", "(SYNTHETIC)"]
    assert lines["split"] == ["total", "images", "WBC", "RBC", "Platelets"]
    dm = SyntheticBCCDDataModule(cache_dir=tmp_path, val_size=0.1)
    dm.setup()
    m = dm.metadata
    for split in ("train", "val", "test"):
        counts = [sum(m["class_counts"][split]), m["images"][split], *m["class_counts"][split]]
        assert [int(v) for v in lines[split]] == counts and counts[0] > 0
    assert lines["skipped"] == ["1"] and lines[m["skipped_items"][0]["id"] + ":"][0] == "degenerate"
    assert lines["duplicates"] == ["1", "(dropped)"] and str(tmp_path) in lines["cache"][0]


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _broken(tmp_path, kind):
    """A download that went wrong: an HTML page, a truncated zip or tar.gz, a zip whose data fails its CRC."""
    if kind == "html":
        path = tmp_path / "page"
        path.write_bytes(b"<!DOCTYPE html><html><body>Sign in to the Wi-Fi</body></html>")
        return path
    if kind == "truncated-targz":
        path = tmp_path / "a.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            data = os.urandom(50_000)
            info = tarfile.TarInfo("big.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        path.write_bytes(path.read_bytes()[:20_000])
        return path
    path = _zip(tmp_path / "a.zip", [("d/a.txt", b"a" * 5000), ("d/b.txt", b"hello world" * 100)])
    data = bytearray(path.read_bytes())
    if kind == "truncated-zip":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return path
    start = data.index(b"d/b.txt") + len("d/b.txt")  # first local header's name; its data follows
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("html", r"not a zip or tar archive \(\d+ bytes starting b'<!DOCTYPE html>.*captive-portal page"),
        ("truncated-zip", r"not a zip or tar archive"),
        ("truncated-targz", r"unreadable: (Compressed file ended|unexpected end of data)"),
        ("crc", r"unreadable: Bad CRC-32 for file 'd/b.txt'|unreadable: Error -3 while decompressing"),
    ],
)
def test_a_broken_download_is_one_line_and_leaves_nothing(tmp_path, kind, why):
    archive = _broken(tmp_path, kind)
    target = tmp_path / "data" / "BCCD"
    with pytest.raises(DatasetNotFoundError, match=why) as err:
        dl.install("bccd", [dl.Source(archive.as_uri())], target, lambda staging: staging)
    assert "\n" not in str(err.value) and "python -m lbam.data download dataset=bccd" in str(err.value)
    assert os.listdir(tmp_path / "data") == []  # no partial folder


def test_extraction_caps_the_bytes_it_writes(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", [("zeros.bin", b"\0" * 3_000_000)])  # compresses to a few KB
    assert bomb.stat().st_size < 10_000
    with pytest.raises(
        dl.UnsafeArchiveError, match=r"bomb.zip: its members declare 0.00 GiB, more than"
    ) as err:
        dl.safe_extract(bomb, tmp_path / "out", max_bytes=1_000_000)
    assert "zip or tar bomb" in str(err.value) and not (tmp_path / "out" / "zeros.bin").exists()
    members = [(tarfile.TarInfo(f"f{i}.bin"), b"\0" * 400_000) for i in range(3)]
    tar = _tar(tmp_path / "bomb.tar", members)
    with pytest.raises(dl.UnsafeArchiveError, match="its members declare"):
        dl.safe_extract(tar, tmp_path / "out2", max_bytes=1_000_000)
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["f0.bin", "f1.bin"]  # the third refused
    dl.safe_extract(tar, tmp_path / "out3", max_bytes=1_200_000)  # at the cap: fine
    target = tmp_path / "data" / "x"
    with pytest.raises(dl.UnsafeArchiveError):
        dl.install("x", [dl.Source(bomb.as_uri())], target, lambda s: s, max_bytes=1_000_000)
    assert os.listdir(tmp_path / "data") == []


def test_the_download_caps_are_module_constants():
    from lbam.data import bccd, oxford_pets

    assert bccd.BCCD_MAX_BYTES == 2 << 30 and oxford_pets.PETS_MAX_BYTES == 4 << 30


@pytest.mark.parametrize("command", ["info", "download"])
def test_a_data_dir_that_does_not_exist_is_reported_not_created(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("LBAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    typo = tmp_path / "dat"
    monkeypatch.setenv("LBAM_DATA_DIR", str(typo))
    assert cli_main([command, "dataset=bccd"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and f"LBAM_DATA_DIR={typo} not found (no such folder)" in err
        and "mkdir -p" in err
    )
    monkeypatch.delenv("LBAM_DATA_DIR")
    assert cli_main([command, "dataset=oxford_pets", f"paths.data_dir={typo}"]) == 1
    err = capsys.readouterr().err
    assert f"the data root {typo} (paths.data_dir or dataset.root) not found" in err
    assert not typo.exists()  # nothing created


def test_only_the_default_data_dir_may_be_created(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("LBAM_ROOT", str(tmp_path))  # the default data dir is then tmp_path/data
    monkeypatch.delenv("LBAM_DATA_DIR", raising=False)
    dm = BCCDDataModule(root=tmp_path / "data", cache_dir=tmp_path / "cache", download=True)
    with pytest.raises(DatasetNotFoundError, match="Name or service not known"):  # got as far as the network
        dm.prepare_data()
    with pytest.raises(DataError, match=r"elsewhere \(paths.data_dir or dataset.root\) not found"):
        BCCDDataModule(root=tmp_path / "elsewhere", cache_dir=tmp_path, download=True).prepare_data()
    assert not (tmp_path / "elsewhere").exists()


def test_a_missing_data_dir_names_the_root_that_is_used_without_it(tmp_path, monkeypatch):
    """Issue #32: with LBAM_DATA_DIR=/nonexistent the message named <root>/data as the fallback while
    ../shared/data (which holds BCCD) is the root actually used once the variable is unset."""
    monkeypatch.setenv("LBAM_ROOT", str(tmp_path / "checkout"))
    (tmp_path / "shared" / "data" / "BCCD").mkdir(parents=True)
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "nonexistent"))
    with pytest.raises(DataError) as err:
        BCCDDataModule(root=tmp_path / "nonexistent", cache_dir=tmp_path / "cache").setup()
    assert str(err.value).endswith(f"(unset, the data root is {tmp_path / 'shared' / 'data'})")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_member_nested_2000_folders_deep_is_one_line(tmp_path, kind):
    """Was a RecursionError (os.makedirs recurses once per folder)."""
    name = "d/" * 2000 + "f.txt"
    archive = tmp_path / f"deep.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, "x")
    else:
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "data").mkdir()
    with pytest.raises(dl.UnsafeArchiveError) as err:
        dl.install("x", [dl.Source(archive.as_uri())], tmp_path / "data" / "X", lambda s: s)
    assert str(err.value) == (
        f"archive0: member {name[:60]!r}… is 2001 levels deep (more than 64); refusing the archive"
    )
    assert os.listdir(tmp_path / "data") == []
