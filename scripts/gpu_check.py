"""Check a freshly lent GPU in one command (`make gpu-check`, <= 8 min on one GPU): what it is, one embodiment-1
run end to end compiled, the training step's speed per attention module, and DDP on two GPUs.

    python scripts/gpu_check.py                      # on the GPU; writes into a fresh temp folder
    python scripts/gpu_check.py --out /tmp/x         # rows, run directories and every cache under /tmp/x
    python scripts/gpu_check.py --device cpu         # the same stages at tiny sizes (a smoke test, ~5 min)

Stages, each a line (or lines) of one table, printed at the end and saved as OUT/gpu_check.md (and .json):
- env: torch, CUDA and driver versions, the device, its compute capability, native bf16 ("none" on the CPU);
- train: `lbam.train experiment=embodiment1 attention=lbam seed=0 model.compile=true` (the runner's precision:
  bf16-mixed where native, else 16-mixed) on the real BCCD (its synthetic twin, said in a line, where the real
  one is not found: nothing is downloaded), timed, with its row's test balanced accuracy, images/s, compile
  seconds and compiles; on the CPU the synthetic BCCD at 32 px, width x0.125, 32 training and 16 test crops,
  batch 8, 2 epochs;
- steps: training-step images/s (lbam.bench.step.make_step: forward, loss, backward, AdamW) per attention for
  cnn4 at 128 px batch 64 and VGG16-BN at 224 px batch 32 on random tensors, eager and compiled (bf16 autocast
  where native, else fp16); on the CPU at 32 px, width x0.125, batch 8, eager only (one compile takes minutes on 2 shared
  cores; the train stage compiles); a model whose loss is non-finite after its timed steps is a failed line;
- ddp: a tiny synthetic run on 2 GPUs with ddp_spawn (2 CPU processes on the CPU); skipped, with the reason,
  with fewer than 2 GPUs.
A stage that fails is one line in the table (stage, error); the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTENTIONS = ("none", "se", "cbam", "bam", "eca", "lbam")
STAGES = ("env", "train", "steps", "ddp")
# backbone -> (image side, width_mult, batch, build_backbone kwargs), per device.
STEP_SIZES = {
    "cuda": {"cnn4": (128, 1.0, 64, {}), "vgg16": (224, 1.0, 32, {"batch_norm": True})},
    "cpu": {"cnn4": (32, 0.125, 8, {}), "vgg16": (32, 0.125, 8, {"batch_norm": True})},
}
TINY = ["dataset=synthetic_bccd", "profile=test", "dataset.image_size=32", "backbone.width_mult=0.125"]
# Exact split sizes in whole batches: one training and one evaluation graph to compile, no partial last batch.
CPU_TRAIN = ["dataset.split_by=crop", "dataset.train_size=32", "dataset.test_size=16", "dataset.batch_size=8"]


def one_line(e: BaseException | str) -> str:
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return " ".join(text.split())[:300]


class Table:
    """The check's lines; with ``out``, saved as OUT/gpu_check.md and .json at every line, so that a check stopped
    part-way (a lease running out, Ctrl-C) keeps every line it reached."""

    def __init__(self, out: Path | None = None) -> None:
        self.rows: list[dict[str, str]] = []
        self.out = out

    def add(self, stage: str, item: str, result: str, detail: str = "", ok: bool = True) -> None:
        self.rows.append({"stage": stage, "item": item, "result": result, "detail": detail, "ok": ok})
        if self.out is not None:
            (self.out / "gpu_check.md").write_text(self.markdown())
            (self.out / "gpu_check.json").write_text(json.dumps(self.rows, indent=1) + "\n")

    @property
    def failed(self) -> bool:
        return any(not r["ok"] for r in self.rows)

    def markdown(self) -> str:
        lines = ["| stage | item | result | detail |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['stage']} | {r['item']} | {r['result']} | {r['detail']} |" for r in self.rows]
        return "\n".join(lines) + "\n"


def bf16_native(torch, device: str) -> bool:
    from lbam.config import native_bf16  # the runner's rule: compute capability >= 8.0

    return device == "cuda" and native_bf16()


def stage_env(t: Table, device: str) -> None:
    import torch

    from lbam.results import cpu_model

    t.add("env", "torch", torch.__version__, f"python {sys.version.split()[0]}")
    if device == "cpu":
        t.add(
            "env", "device", f"cpu: {cpu_model()}", f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        t.add("env", "CUDA / driver / bf16 native", "none")
        return
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available to torch (run with --device cpu for the CPU check)")
    smi = shutil.which("nvidia-smi")
    driver = "nvidia-smi not found"
    if smi:
        query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = (subprocess.run(query, capture_output=True, text=True).stdout.split() or ["unknown"])[0]
    t.add("env", "CUDA / driver", f"{torch.version.cuda} / {driver}", f"{torch.cuda.device_count()} GPU(s)")
    for i in range(torch.cuda.device_count()):
        cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
        gib = torch.cuda.get_device_properties(i).total_memory / 2**30
        t.add("env", f"cuda:{i}", torch.cuda.get_device_name(i), f"capability {cap}, {gib:.0f} GiB")
    t.add(
        "env", "bf16 native", "yes" if bf16_native(torch, device) else "no (runs use 16-mixed: fp16 + scaler)"
    )


def train_run(overrides: list[str], timeout: float) -> tuple[dict, float]:
    """`python -m lbam.train <overrides>` in a fresh process: (its row, wall seconds)."""
    from lbam.config import compose, run_name
    from lbam.results import load_row, row_path

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lbam.train", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    cfg = compose(overrides)
    name = run_name(cfg.attention.name, overrides, cfg.seed)
    return load_row(row_path(cfg.paths.results_dir, cfg.experiment_name, name)).to_dict(), wall


def train_overrides(device: str, paths: list[str]) -> tuple[list[str], str | None]:
    """The train stage's overrides, and a note when the real BCCD is missing. On the GPU the runner picks the
    precision, as in a user's run (bf16-mixed where native, else 16-mixed); without the real BCCD the synthetic
    twin trains at the same sizes (a download would write outside OUT)."""
    from lbam.paths import data_root

    base = ["experiment=embodiment1", "attention=lbam", "seed=0", "model.compile=true", *paths]
    if device != "cuda":
        return [*base, *TINY, *CPU_TRAIN, "trainer=cpu", "trainer.max_epochs=2"], None
    root = data_root(folder="BCCD")
    if (root / "BCCD" / "Annotations").is_dir():
        return [*base, "trainer=gpu"], None
    note = f"real BCCD not found under {root} (set LBAM_DATA_DIR to the folder holding BCCD/)"
    return [*base, "trainer=gpu", "dataset=synthetic_bccd"], note


def stage_train(t: Table, device: str, paths: list[str]) -> None:
    overrides, note = train_overrides(device, paths)
    if note:
        t.add("train", "data", "synthetic BCCD", note)
    row, wall = train_run(overrides, timeout=600)
    ok = row["status"] == "ok"
    acc = f"{100 * row['test_balanced_acc']:.2f} %" if ok else row["status"]
    t.add(
        "train",
        f"embodiment1 lbam on {row['dataset']}",
        f"{wall:.0f} s",
        f"{row['device']}, {row['precision']}",
    )
    t.add(
        "train",
        "test balanced accuracy",
        acc,
        row.get("error") or f"{row['epochs']} epochs, {row['steps']} steps",
        ok,
    )
    compiles = row.get("compiles")
    compiles = "compiles: not recorded by this runner" if compiles is None else f"{compiles} compile(s)"
    t.add("train", "images/s", f"{row['images_per_second'] or 0:.0f}", "after the first epoch")
    t.add("train", "compile", f"{row['compile_seconds'] or 0:.0f} s", compiles)


def stage_steps(t: Table, device: str, attentions: tuple[str, ...]) -> None:
    import contextlib

    import torch

    from lbam.bench.common import interleaved_times
    from lbam.bench.step import make_step

    dev = torch.device(device)
    # The runs' precision: bf16 where native, else fp16 (the loss scaler costs nothing worth timing here).
    half = torch.bfloat16 if bf16_native(torch, device) else torch.float16
    autocast = torch.autocast("cuda", dtype=half) if device == "cuda" else None
    for backbone, (image, width, batch, kw) in STEP_SIZES[device].items():
        torch.compiler.reset()
        # Compiled steps on the GPU only: on 2 shared CPU cores one compile takes minutes (the train stage
        # compiles there).
        kinds = [
            (a, m) for a in attentions for m in ("eager", "compiled") if m == "eager" or device == "cuda"
        ]
        steps, first = {}, {}
        for attention, mode in kinds:
            try:
                with autocast or contextlib.nullcontext():
                    step, first[(attention, mode)] = make_step(
                        attention,
                        (image, width, batch),
                        mode == "compiled",
                        dev,
                        backbone,
                        placement="stage",
                        **kw,
                    )
            except (
                Exception
            ) as e:  # one model failing (e.g. a compile error) is a line, not the end of the stage
                t.add("steps", f"{backbone} {attention} {mode}", "FAILED", one_line(e), ok=False)
                continue

            def run(step=step) -> torch.Tensor:
                with autocast or contextlib.nullcontext():
                    return step()

            steps[(attention, mode)] = run
            # A line per model as it is built: a run stopped part-way still shows what each compile cost.
            print(
                f"[gpu-check] steps {backbone} {attention} {mode}: first step {first[(attention, mode)]:.1f} s",
                flush=True,
            )
        times = interleaved_times(steps, *((3, 0.2) if device == "cuda" else (1, 0.0)))
        for (attention, mode), ts in times.items():
            step_s = sorted(ts)[len(ts) // 2]
            detail = f"{image} px x{width} batch {batch}"
            if mode == "compiled":
                detail += f", compile {first[(attention, mode)] - step_s:.0f} s"
            # After the timed steps: a model whose gradients went non-finite has a non-finite loss by now.
            finite = bool(torch.isfinite(steps[(attention, mode)]()).item())
            result = f"{batch / step_s:.0f} img/s" if finite else "non-finite loss"
            t.add("steps", f"{backbone} {attention} {mode}", result, detail, ok=finite)


def stage_ddp(t: Table, device: str, paths: list[str]) -> None:
    import torch

    from lbam.paths import CONFIG_DIR

    if device == "cuda" and torch.cuda.device_count() < 2:
        t.add("ddp", "2-GPU ddp_spawn", "skipped", f"{torch.cuda.device_count()} GPU here; DDP needs 2")
        return
    # The local strategy: trainer=ddp_spawn where the configs have it, else ddp with the spawn strategy.
    has_spawn = (CONFIG_DIR / "trainer" / "ddp_spawn.yaml").is_file()
    trainer = ["trainer=ddp_spawn"] if has_spawn else ["trainer=ddp", "trainer.strategy=ddp_spawn"]
    accelerator = "gpu" if device == "cuda" else "cpu"
    # Eager: a smoke test of the processes and the all-reduce, not of compile (the train stage covers it).
    overrides = ["experiment=embodiment1_quick", "attention=lbam", *TINY, *trainer, "trainer.devices=2"]
    overrides += ["model.compile=false"]
    overrides += [
        f"trainer.accelerator={accelerator}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        *paths,
    ]
    row, wall = train_run(overrides, timeout=300)
    ok = row["status"] == "ok" and "x2" in str(row["device"])
    t.add(
        "ddp",
        f"2 x {accelerator} ddp_spawn",
        "ok" if ok else "FAILED",
        f"{row['device']}, {wall:.0f} s; {row.get('error') or ''}",
        ok,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for everything it writes (default: a fresh temp folder)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when present, else cpu")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS), help="steps: comma-separated subset")
    args = parser.parse_args(argv)
    for option, given, valid in (
        ("stages", args.stages, STAGES),
        ("attentions", args.attentions, ATTENTIONS),
    ):
        unknown = [x for x in given.split(",") if x not in valid]
        if unknown:
            print(f"gpu_check.py: unknown --{option} {unknown}; valid: {','.join(valid)}", file=sys.stderr)
            return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="lbam-gpu-check-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Every cache inside OUT (also for the training processes, which inherit the environment).
    caches = {
        "LBAM_CACHE_DIR": "cache",
        "TORCHINDUCTOR_CACHE_DIR": "cache/inductor",
        "TRITON_CACHE_DIR": "cache/triton",
    }
    for var, sub in {**caches, "TMPDIR": "tmp"}.items():
        os.environ[var] = str(out / sub)
        (out / sub).mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(out / "tmp")
    sys.path.insert(0, str(ROOT))
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    paths = [
        f"paths.results_dir={out}/results",
        f"paths.experiments_dir={out}/experiments",
        f"paths.cache_dir={out}/cache",
    ]
    stages = {
        "env": lambda t: stage_env(t, device),
        "train": lambda t: stage_train(t, device, paths),
        "steps": lambda t: stage_steps(t, device, tuple(args.attentions.split(","))),
        "ddp": lambda t: stage_ddp(t, device, paths),
    }
    t, start = Table(out), time.perf_counter()
    for name in args.stages.split(","):
        print(f"[gpu-check] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            stages[name](t)
        except Exception as e:
            t.add(name, "stage", "FAILED", one_line(e), ok=False)
        t.add(name, "stage time", f"{time.perf_counter() - t0:.0f} s")
    t.add(
        "all",
        "total time",
        f"{time.perf_counter() - start:.0f} s",
        f"device {device}, output in {out}",
        not t.failed,
    )
    print(t.markdown() + f"\nsaved to {out / 'gpu_check.md'}")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
