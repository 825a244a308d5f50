"""Times and counts stated in more than one place agree: the Makefile help and the experiment files' headers give
no figure for a target that the README's command table does not give too, and per-run claims in the quick
profile's comments match its committed rows. A changed measurement must be changed everywhere it is quoted."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A time or a count: '8.5 min', '2.85 h', '380 s', '8.5–9 min', '693 runs' (an optional range, one unit).
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:\s*[–-]\s*\d[\d,]*(?:\.\d+)?)?)\s*(min|h|s|runs)\b")


def figures(text: str) -> set[str]:
    """Every time or count in ``text``, normalised ('8.5-9 min'); a range also gives its ends ('8.5 min', '9 min')."""
    out = set()
    for value, unit in FIGURE.findall(text):
        parts = [p.strip().replace(",", "") for p in re.split(r"[–-]", value)]
        out |= {f"{'-'.join(parts)} {unit}"} | {f"{p} {unit}" for p in parts}
    return out


def readme_rows() -> dict[str, str]:
    """The README's command table: target -> its row ('| `make curve JOBS=2` | … |' -> curve)."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := re.match(r"\| `make (\w[\w-]*)[^`]*` \|", line):
            rows[m.group(1)] = line
    return rows


def make_help() -> dict[str, str]:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*make (\S+)\s+(.*)$", out, re.M)}


def disagreements(claims: dict[str, str], readme: dict[str, str]) -> list[str]:
    """For each target both time or count: the figures of ``claims`` that its README row does not give."""
    return [
        f"{target}: {sorted(missing)} not in the README's row"
        for target, text in claims.items()
        if target in readme and (missing := figures(text) - figures(readme[target]))
    ]


def test_figures_are_parsed_so_that_a_changed_number_is_caught():
    assert figures("≈ 2.85 h for its 693 runs; 8.5–9 min, 14.8 s a run, 1,550 steps") == {
        "2.85 h", "693 runs", "8.5-9 min", "8.5 min", "9 min", "14.8 s"
    }  # fmt: skip
    readme = {"quick": "| `make quick` | 2-core CPU | 8.5 min for the runs |"}
    assert disagreements({"quick": "one seed (8.5 min of runs)"}, readme) == []
    assert disagreements({"quick": "one seed (about 5 min)"}, readme) == [
        "quick: ['5 min'] not in the README's row"
    ]
    assert figures("embodiment1_quick.yaml, 48px, x0.5, JOBS=2") == set()  # names and settings are no figures


def test_make_help_gives_the_readme_figure_for_every_target_both_time():
    readme, helps = readme_rows(), make_help()
    assert {"quick", "curve", "plots", "test"} <= set(readme) and {"quick", "curve"} <= set(helps)
    timed = [t for t in helps if t in readme and figures(helps[t])]
    assert {"quick", "curve"} <= set(timed)  # the help times these (it would be no check without them)
    assert disagreements(helps, readme) == []


def test_experiment_headers_agree_with_the_readme_and_the_quick_rows():
    readme = readme_rows()
    for target, name in (("quick", "embodiment1_quick"), ("curve", "embodiment1_curve")):
        header = (ROOT / "configs" / "experiment" / f"{name}.yaml").read_text().split("\ndefaults:")[0]
        assert disagreements({target: header}, readme) == [], name
    text = (ROOT / "configs" / "experiment" / "embodiment1_quick.yaml").read_text()
    ((low, high),), seconds = re.findall(r"(\d+)-(\d+) s of training per run", text), []
    for path in (ROOT / "results" / "runs" / "embodiment1_quick").glob("*.json"):
        seconds.append(json.loads(path.read_text())["train_seconds"])
    assert len(seconds) == 7 and (round(min(seconds)), round(max(seconds))) == (int(low), int(high))


def test_the_readmes_python_recipe_runs_as_printed(tmp_path):
    """The README's 'Use it in your project' block is run as a user would paste it (timm is a test extra)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "the README has one python recipe"
    script = tmp_path / "recipe.py"
    script.write_text(blocks[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's lbam, as after `pip install -e .`
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "'attention_params'" in run.stdout  # profile_model's dict was printed
