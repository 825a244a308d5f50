"""Provenance written into result rows."""

import subprocess

from lbam.results import git_commit


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_commit_is_dirty_for_code_changes_but_not_for_rewritten_results(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "row.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git_commit(tmp_path)
    assert len(sha) == 40 and not sha.endswith("+dirty")
    (tmp_path / "results" / "row.json").write_text('{"new": 1}')
    assert git_commit(tmp_path) == sha  # a rerun rewriting its committed row is not a code change
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+dirty"


def test_commit_is_unknown_outside_git(tmp_path):
    assert git_commit(tmp_path) == "unknown"
