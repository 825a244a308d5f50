"""Weights prove they are finite and the ones saved (issue #31): a checkpoint whose bytes rotted, whose weights are
NaN, of another shape, or that fails to restore is set aside once with one line and the run trains afresh; a run
that ends non-finite writes a failed row and never replaces an ok one."""

import json
import logging

import pytest
import pytorch_lightning as pl
import torch

from lbam.checkpoint import DIGEST, weights_digest
from lbam.results import load_row
from tests.test_train import Interrupt, InterruptAtEpoch, RecordStart, row_file, run, run_dir, tiny

pytestmark = pytest.mark.slow


def interrupted(tmp_path, data_cache, *extra):
    """A run stopped after its first epoch: (its overrides, its checkpoint)."""
    # min_interval_s=0: a checkpoint at every epoch end (the default waits 10 min before its first)
    overrides = tiny(
        tmp_path,
        data_cache,
        "attention=none",
        "trainer.max_epochs=2",
        "callbacks.last_checkpoint.min_interval_s=0",
        *extra,
    )
    with pytest.raises(Interrupt):
        run(overrides, callbacks=[InterruptAtEpoch(1)])
    return overrides, next((tmp_path / "experiments").rglob("last.ckpt"))


def rewrite(path, change, reseal: bool) -> None:
    """Load, change and save a checkpoint as a tool would; ``reseal``: with the digest recomputed (a forger, or a
    tool that knows it), else with the old one (or none, as checkpoints written before it)."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    if reseal:
        ckpt[DIGEST] = weights_digest(ckpt)
    torch.save(ckpt, path)


def resumed_once(overrides, ckpt, caplog, kind: str) -> tuple[dict, str]:
    """Run again: the checkpoint is set aside (one line naming why) and the run trains from epoch 0."""
    recorder = RecordStart()
    with caplog.at_level(logging.WARNING, logger="lbam"):
        row = run(overrides, callbacks=[recorder])
    assert row["status"] == "ok" and recorder.start_epochs == [0] and row["resumed"] is False
    (aside,) = ckpt.parent.glob(f"last.ckpt.{kind}-*")
    (line,) = [r.getMessage() for r in caplog.records if "moved it to" in r.getMessage()]
    assert aside.name in line and "\n" not in line
    return row, line


def test_every_checkpoint_carries_the_digest_of_its_weights(tmp_path, data_cache):
    _, ckpt = interrupted(tmp_path, data_cache)
    state = torch.load(ckpt, weights_only=True)
    assert state[DIGEST] == weights_digest(state) and len(state[DIGEST]) == 64


def test_a_bit_flipped_in_the_file_is_caught_by_the_digest(tmp_path, data_cache, caplog):
    """The trial: a checkpoint with flipped exponent bits resumed and gave a slightly different ok row. The
    weights stay finite (x2 or x0.5), so only the digest can tell."""
    overrides, ckpt = interrupted(tmp_path, data_cache)
    state = torch.load(ckpt, weights_only=True)
    name, weight = next(
        (k, v) for k, v in state["state_dict"].items() if v.dtype == torch.float32 and v.numel() > 8
    )
    data = bytearray(ckpt.read_bytes())
    at = data.find(
        weight.reshape(-1)[:4].numpy().tobytes()
    )  # the tensor's first bytes, stored raw in the zip
    assert at > 0
    data[at + 3] ^= 0x01  # the lowest exponent bit of its first float32 (little-endian): x2 or x0.5
    ckpt.write_bytes(bytes(data))
    changed = torch.load(ckpt, weights_only=True)["state_dict"][name]
    assert torch.isfinite(changed).all() and not torch.equal(changed, weight)  # plausible, finite, wrong
    _, line = resumed_once(overrides, ckpt, caplog, "corrupt")
    assert "holds other weights than it was saved with" in line


def test_nan_weights_with_the_runs_identity_never_replace_its_ok_row(tmp_path, data_cache, caplog):
    """The row the trial lost: the finished marker gone, a NaN checkpoint carrying the run's identity (written
    before checkpoints had a digest) resumed at its last epoch and its chance-level row replaced the real one."""
    overrides = tiny(tmp_path, data_cache, "attention=none", "trainer.max_epochs=2")
    ok = run(overrides)
    path = row_file(tmp_path, ok)
    (run_dir(tmp_path, ok) / "finished.json").unlink()
    ckpt = tmp_path / "experiments" / ok["checkpoint"]

    def nan(state):
        del state[DIGEST]
        for v in state["state_dict"].values():
            if v.is_floating_point():
                v.fill_(float("nan"))

    rewrite(ckpt, nan, reseal=False)
    again, line = resumed_once(overrides, ckpt, caplog, "non-finite")
    assert "holds NaN or infinite values in" in line
    assert again["test_balanced_acc"] == ok["test_balanced_acc"] and load_row(path).status == "ok"


def test_weights_of_another_shape_are_set_aside_before_lightning_meets_them(tmp_path, data_cache, caplog):
    overrides, ckpt = interrupted(tmp_path, data_cache)

    def grow(state):
        key = next(k for k, v in state["state_dict"].items() if v.ndim == 4)
        state["state_dict"][key] = torch.zeros(1, *state["state_dict"][key].shape[1:])

    rewrite(ckpt, grow, reseal=True)
    _, line = resumed_once(overrides, ckpt, caplog, "mismatched")
    assert "does not fit this model: 0 missing" in line and "1 of another shape" in line


def test_a_checkpoint_that_fails_to_restore_is_set_aside_once(tmp_path, data_cache, caplog):
    """Finite, of the right shapes and sealed, but Lightning cannot restore it (an optimiser state of another
    optimiser): one failed run that says so, then never again."""
    overrides, ckpt = interrupted(tmp_path, data_cache)
    other = [{"state": {}, "param_groups": []}]  # no parameter group: AdamW's load_state_dict refuses it
    rewrite(ckpt, lambda state: state.__setitem__("optimizer_states", other), reseal=True)
    failed = run(overrides)
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    (aside,) = ckpt.parent.glob("last.ckpt.unrestorable-*")
    assert any("could not be restored" in r.getMessage() for r in caplog.records)
    recorder = RecordStart()
    assert run(overrides, callbacks=[recorder])["status"] == "ok" and recorder.start_epochs == [0]
    assert list(ckpt.parent.glob("last.ckpt.*")) == [aside]


class Overflow(pl.Callback):
    """At the end of training, make the classifier's weights huge but finite: the test logits overflow."""

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            for p in pl_module.model.fc.parameters():  # weight and bias: the largest finite float32
                p.fill_(torch.finfo(torch.float32).max)


class NaNBuffer(pl.Callback):
    """At the end of training, put a NaN into a batch-norm running mean: training never uses it, testing does."""

    def on_train_end(self, trainer, pl_module):
        next(b for n, b in pl_module.model.named_buffers() if n.endswith("running_mean")).fill_(float("nan"))


@pytest.mark.parametrize(
    ("callback", "error"),
    [
        (Overflow(), "FloatingPointError: the test logits hold NaN or infinite values"),
        (
            NaNBuffer(),
            "FloatingPointError: the trained weights hold NaN or infinite values (1 tensor(s), e.g. ",
        ),
    ],
    ids=["logits", "buffer"],
)
def test_a_run_that_ends_non_finite_is_a_failed_row_that_keeps_the_ok_one(
    tmp_path, data_cache, callback, error
):
    overrides = tiny(tmp_path, data_cache, "attention=se")
    ok = run(overrides)
    path = row_file(tmp_path, ok)
    before = (path.read_bytes(), path.with_suffix(".preds.csv").read_bytes())
    failed = run([*overrides, "force=true"], callbacks=[callback])
    assert failed["status"] == "failed" and failed["error"].startswith(error), failed["error"]
    assert (path.read_bytes(), path.with_suffix(".preds.csv").read_bytes()) == before
    kept = json.loads((run_dir(tmp_path, ok) / "failed_row.json").read_text())
    assert kept["status"] == "failed" and kept["test_acc"] is None
