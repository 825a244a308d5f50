"""Check a freshly lent GPU in one prepared command (`make device-check`, at most 9 min): what it is, embodiment 2 on
a pets-shaped twin at one job and at the chosen jobs, embodiment 1's protocol end to end, a projected
`make reproduce` time, and the training step eager / inductor / CUDA graphs.

    python scripts/device_check.py                 # on the GPU; writes into a fresh temp folder
    python scripts/device_check.py --out /tmp/x    # rows, run directories, logs and every cache under /tmp/x
    python scripts/device_check.py --device cpu    # the same stages at toy sizes (a smoke test, <= 5 min)

A machine without CUDA is refused with one line unless --device cpu. A GPU machine may have no package index:
`make device-check` runs this with the machine's own python3 and torch, and installs what its image lacks from
.whl/ (`make wheels`, filled beforehand where pip reaches an index). Real BCCD: LBAM_DATA_DIR (or ../shared/data);
without it embodiment 1 trains the synthetic twin at the same sizes, and a line says so.

Stages, each a line (or lines) of one table, saved as OUT/device_check.md (and .json) at every line:
- env: torch, CUDA and driver, the device, its memory and compute capability, native bf16, cores;
- e2: embodiment 2 (VGG16-BN, 224 px, bf16, compiled) on a synthetic pets twin of real size (3,000 train / 680
  test) for 2 epochs: LBAM alone (one job), then the protocol's first runs at the jobs `make reproduce` would
  choose, at once: img/s, compile s and peak memory per process (nvidia-smi); the twin is written under OUT;
- e1: `scripts/reproduce.py --experiments embodiment1` (21 runs, JOBS=auto) end to end: its wall time and rows;
- projection: `make reproduce` = e1 as measured + embodiment 2's 21 runs x 30 epochs from e2's rates, through
  the pool's own schedule (scripts/pool.py) - projected, and said so;
- steps: cnn4's training step at 128 px batch 64, eager / inductor / CUDA graphs (compile mode reduce-overhead):
  img/s, wall vs GPU-busy ms per step, peak memory, compile s;
- ddp: a tiny run on 2 GPUs with ddp_spawn; skipped, with the reason, on one GPU (and on the CPU unless
  `--stages` names it: 2 CPU processes, which tests/test_train.py runs anyway).
On the CPU: a twin of 120 images (64 train / 16 test) at 32 px, width x0.125, eager, 2 jobs; e1 on the synthetic
BCCD at 32 px, seed 0, one epoch of 2 batches; the steps stage for `none` at 32 px batch 8.
A stage that fails, or that the time budget stops (--budget-s: no work starts after 510 s on a GPU, 300 on the
CPU; the runs under way then stop), is one line (ok: no); the others still run, and the exit status is 1.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "e2", "e1", "projection", "steps", "ddp")
ATTENTIONS = ("none", "se", "cbam", "bam", "eca", "lbam")
BUDGET_S = {"cuda": 510.0, "cpu": 300.0}  # the GPU's: a stage under way may overrun it by up to a minute


def one_line(e: BaseException | str) -> str:
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return " ".join(text.split())[:300]


class Table:
    """The check's lines; with ``out``, saved as OUT/device_check.md and .json at every line, so that a check
    stopped part-way (a lease running out, Ctrl-C) keeps every line it reached."""

    def __init__(self, out: Path | None = None) -> None:
        self.rows: list[dict] = []
        self.out = out

    def add(self, stage: str, item: str, result: str, detail: str = "", ok: bool = True) -> None:
        self.rows.append({"stage": stage, "item": item, "result": result, "detail": detail, "ok": ok})
        print(f"[device-check] {stage} | {item} | {result} | {detail}", flush=True)
        if self.out is not None:
            (self.out / "device_check.md").write_text(self.markdown())
            (self.out / "device_check.json").write_text(json.dumps(self.rows, indent=1) + "\n")

    @property
    def failed(self) -> bool:
        return any(not r["ok"] for r in self.rows)

    def markdown(self) -> str:
        lines = ["| stage | item | result | detail |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['stage']} | {r['item']} | {r['result']} | {r['detail']} |" for r in self.rows]
        return "\n".join(lines) + "\n"


@dataclass
class Check:
    """What every stage needs: the device, the output folder, the time left, and what earlier stages measured."""

    device: str
    out: Path
    table: Table
    deadline: float  # time.monotonic()
    attentions: tuple[str, ...]
    explicit: bool = False  # --stages was given
    measured: dict = field(default_factory=dict)  # e2 and e1 figures, for the projection

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def paths(self, name: str) -> list[str]:
        """Overrides that keep a stage's rows, run directories and caches under OUT."""
        base = self.out / name
        return [
            f"paths.results_dir={base}/results",
            f"paths.experiments_dir={base}/experiments",
            f"paths.cache_dir={self.out}/cache",
        ]


def stage_env(c: Check) -> None:
    import torch

    from lbam.results import cpu_model

    t = c.table
    t.add("env", "torch", torch.__version__, f"python {sys.version.split()[0]}")
    t.add("env", "cpu", cpu_model(), f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if not c.cuda:
        t.add("env", "CUDA / driver / bf16 native", "none")
        return
    smi = shutil.which("nvidia-smi")
    driver = "nvidia-smi not found"
    if smi:
        query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = (subprocess.run(query, capture_output=True, text=True).stdout.split() or ["unknown"])[0]
    t.add("env", "CUDA / driver", f"{torch.version.cuda} / {driver}", f"{torch.cuda.device_count()} GPU(s)")
    for i in range(torch.cuda.device_count()):
        cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
        free, total = torch.cuda.mem_get_info(i)
        detail = f"capability {cap}, {total / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"
        t.add("env", f"cuda:{i}", torch.cuda.get_device_name(i), detail)
    from lbam.config import native_bf16  # the runner's rule: compute capability >= 8.0

    t.add("env", "bf16 native", "yes" if native_bf16() else "no (runs use 16-mixed: fp16 + scaler)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for everything it writes (default: a fresh temp folder)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda; cpu for the toy-size check")
    parser.add_argument("--stages", help="comma-separated subset (default: all of them)")
    parser.add_argument(
        "--attentions", help="steps: comma-separated subset (default: none,lbam; none on the CPU)"
    )
    parser.add_argument(
        "--budget-s", type=float, help="stop starting work after this (510 on a GPU, 300 on the CPU)"
    )
    args = parser.parse_args(argv)
    attentions = args.attentions or ("none,lbam" if args.device != "cpu" else "none")
    stages = args.stages or ",".join(STAGES)
    for option, given, valid in (("stages", stages, STAGES), ("attentions", attentions, ATTENTIONS)):
        unknown = [x for x in given.split(",") if x not in valid]
        if unknown:
            print(f"device_check.py: unknown --{option} {unknown}; valid: {','.join(valid)}", file=sys.stderr)
            return 2
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's lbam, and the planning modules beside
    import torch

    device = args.device or "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            f"device_check.py: no CUDA device here (torch {torch.__version__} sees none): run it on a GPU machine, "
            "or with --device cpu (make device-check DEVICE=cpu) for the toy-size check on the CPU",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="lbam-device-check-")).resolve()
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
    os.environ.setdefault(
        "PYTHONUNBUFFERED", "1"
    )  # the runs' logs as they happen, for a check stopped part-way
    from device_stages import STAGE_RUNNERS

    budget = args.budget_s or BUDGET_S[device]
    start = time.monotonic()
    c = Check(device, out, Table(out), start + budget, tuple(attentions.split(",")), args.stages is not None)
    runners = {"env": stage_env, **STAGE_RUNNERS}
    for name in stages.split(","):
        t0 = time.monotonic()
        if name != "env" and c.left() < 20:
            c.table.add(name, "stage", "not run", f"the {budget:.0f} s budget is spent", ok=False)
            continue
        try:
            runners[name](c)
        except Exception as e:
            c.table.add(name, "stage", "FAILED", one_line(e), ok=False)
        c.table.add(name, "stage time", f"{time.monotonic() - t0:.0f} s")
    total = time.monotonic() - start
    c.table.add(
        "all", "total time", f"{total:.0f} s", f"device {device}, output in {out}", not c.table.failed
    )
    print(c.table.markdown() + f"\nsaved to {out / 'device_check.md'}")
    return 1 if c.table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
