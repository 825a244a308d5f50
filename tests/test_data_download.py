"""Download hardening without a network: clear offline error, checksums, unsafe archives, atomic install, CLI."""

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from lbam.data import BCCDDataModule, DatasetNotFoundError, OxfordPetsDataModule
from lbam.data import download as dl
from lbam.data.__main__ import main as cli_main
from lbam.data.bccd import BCCD_URL
from lbam.data.oxford_pets import PETS_SOURCES
from lbam.data.synthetic import write_bccd

ROOT = Path(__file__).resolve().parents[1]


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
    assert str(tmp_path / "BCCD") in msg and BCCD_URL in msg
    assert f"LBAM_DATA_DIR={tmp_path}" in msg and "Name or service not known" in msg
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


@pytest.mark.parametrize(
    "kind",
    ["dotdot", "absolute", "symlink", "hardlink"],
)
def test_unsafe_tar_is_refused(tmp_path, kind):
    target = tmp_path / "out"
    target.mkdir()
    good = tarfile.TarInfo("ok.txt")
    bad = {
        "dotdot": tarfile.TarInfo("sub/../../evil.txt"),
        "absolute": tarfile.TarInfo(str(tmp_path / "evil.txt")),
        "symlink": tarfile.TarInfo("link"),
        "hardlink": tarfile.TarInfo("hard"),
    }[kind]
    if kind == "symlink":
        bad.type, bad.linkname = tarfile.SYMTYPE, "../../etc"
    if kind == "hardlink":
        bad.type, bad.linkname = tarfile.LNKTYPE, "../evil.txt"
    archive = _tar(
        tmp_path / "a.tar", [(good, b"fine"), (bad, None if bad.type != tarfile.REGTYPE else b"x")]
    )
    with pytest.raises(dl.UnsafeArchiveError, match="escapes"):
        dl.safe_extract(archive, target)
    assert os.listdir(target) == [] and not (tmp_path / "evil.txt").exists()


def test_unsafe_zip_is_refused_and_safe_archives_extract(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(dl.UnsafeArchiveError, match="escapes"):
        dl.safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
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
    def check(folder):
        if len(list(folder.glob("JPEGImages/*.jpg"))) != expected_images:
            raise OSError("wrong image count")

    pick = lambda staging: next(staging.glob("*/BCCD"))  # noqa: E731
    return dl.install("bccd", [dl.Source(archive.as_uri(), digest)], target, pick=pick, check=check)


def test_install_verifies_checksum_and_renames_atomically(tmp_path, bccd_zip):
    archive, digest = bccd_zip
    with pytest.raises(DatasetNotFoundError, match="sha256 mismatch"):
        _install(archive, "0" * 64, tmp_path / "BCCD")
    with pytest.raises(DatasetNotFoundError, match="rejected: wrong image count"):
        _install(archive, digest, tmp_path / "BCCD", expected_images=364)
    assert os.listdir(tmp_path) == []  # nothing that looks like a dataset, no temp folder
    target = _install(archive, digest, tmp_path / "BCCD")
    assert sorted(p.name for p in target.iterdir()) == ["Annotations", "ImageSets", "JPEGImages"]
    assert os.listdir(tmp_path) == ["BCCD"]


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


def test_cli_reports_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LBAM_CACHE_DIR", str(tmp_path / "cache"))
    assert cli_main(["info", "dataset=bccd"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "BCCD") in err and "LBAM_DATA_DIR" in err and BCCD_URL in err
    assert cli_main(["frobnicate"]) == 2


def test_cli_info_prints_counts(tmp_path):
    env = {**os.environ, "LBAM_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "lbam.data", "info", "dataset=synthetic_bccd", "dataset.val_size=0.1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.strip()}
    assert lines["dataset"] == ["synthetic_bccd", "(SYNTHETIC)"]
    assert lines["split"] == ["total", "WBC", "RBC", "Platelets"]
    n = {s: int(lines[s][0]) for s in ("train", "val", "test")}
    assert n == {"train": 163, "val": 18, "test": 60}
    assert lines["skipped"] == ["1"] and str(tmp_path) in lines["cache"][0]
