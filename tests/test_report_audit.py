"""Label-audit thumbnails (`python -m lbam.report label-audit`): drawn from a crafted VOC folder, the real BCCD
when it is here, skipped with one line without BCCD, and a bad id is one line."""

import shutil

import numpy as np
import pytest
from PIL import Image

from lbam.report import main

ROOT_LIST = "results/label_audit/labels.csv"
XML = """<annotation>{}</annotation>"""
OBJ = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


def crafted_bccd(root):
    voc = root / "BCCD"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    objects = [("RBC", 10, 10, 60, 60), ("Platelets", 70, 20, 90, 40), ("WBC", 30, 70, 90, 120)]
    (voc / "Annotations" / "img7.xml").write_text(XML.format("".join(OBJ.format(*o) for o in objects)))
    pixels = np.random.default_rng(0).integers(0, 255, (140, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(voc / "JPEGImages" / "img7.jpg")
    return voc


def audit_list(results, lines):
    (results / "label_audit").mkdir(parents=True, exist_ok=True)
    (results / "label_audit" / "labels.csv").write_text(
        "id,label,reason\n" + "".join(f"{x}\n" for x in lines)
    )


def test_thumbnails_from_a_crafted_voc(tmp_path, monkeypatch, capsys):
    crafted_bccd(tmp_path / "data")
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "data"))
    audit_list(tmp_path, ['img7#1,Platelets,"a reason, with a comma"', "img7#2,WBC,another"])
    assert main(["label-audit", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.split()
    files = [tmp_path / "label_audit" / f for f in ("img7_1.png", "img7_2.png")]
    assert out == [str(f) for f in files] and all(f.stat().st_size > 10_000 for f in files)


def test_a_box_that_is_not_there_is_one_line(tmp_path, monkeypatch, capsys):
    crafted_bccd(tmp_path / "data")
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "data"))
    audit_list(tmp_path, ["img7#9,RBC,no such box"])
    assert main(["label-audit", "--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "lbam.report: error: img7#9: no box 9 in img7.xml"


def test_skipped_with_one_line_without_bccd(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LBAM_DATA_DIR", str(tmp_path / "empty"))
    audit_list(tmp_path, ["img7#1,RBC,x"])
    assert main(["label-audit", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("label audit thumbnails skipped: no BCCD at")
    assert not list((tmp_path / "label_audit").glob("*.png"))


@pytest.mark.bccd
def test_thumbnails_of_the_committed_list_from_the_real_bccd(tmp_path, monkeypatch, bccd_root, capsys):
    from conftest import ROOT

    monkeypatch.setenv("LBAM_DATA_DIR", str(bccd_root))
    (tmp_path / "label_audit").mkdir()
    shutil.copy(ROOT / ROOT_LIST, tmp_path / "label_audit" / "labels.csv")
    assert main(["label-audit", "--results-dir", str(tmp_path)]) == 0
    committed = sorted(p.name for p in (ROOT / ROOT_LIST).parent.glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "label_audit").glob("*.png")) == committed
    capsys.readouterr()
