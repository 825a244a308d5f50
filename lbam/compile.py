"""What torch.compile did during a run: how many graphs it compiled, and whether dynamo gave up on a frame.

Hydra runs a sweep's jobs in one process (and the joblib launcher reuses its workers), while dynamo's caches and
recompile limits are per process: without a reset, the 4th attention of a CPU sweep hit `recompile_limit (8)` and
the rest of the sweep trained partly eagerly under rows that said `compiled=True`. So every run starts with
:func:`fresh_compile_state`, counts its compilations through a counting backend, and watches dynamo's log for the
recompile-limit warning; the row records both.
"""

from __future__ import annotations

import logging

import torch

DYNAMO_LOGGER = "torch._dynamo"
_LIMIT_MARKERS = ("recompile_limit", "cache_size_limit")


def fresh_compile_state() -> None:
    """Forget every compiled graph and guard of this process: the run compiles as if it were the first."""
    torch.compiler.reset()


# torch.compile's modes (inductor only); "reduce-overhead" replays the step as CUDA graphs (one launch instead of
# hundreds: the cnn4 step is launch-bound on a GPU). Off by default until a GPU measures it faster
# (`make device-check`'s step table).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileCounter:
    """A `torch.compile` backend that counts the graphs it compiles and delegates them to ``inner`` (inductor by
    default): the composable-backend pattern of PyTorch's custom-backends guide. ``mode`` is torch.compile's: a
    custom backend does not get it from torch.compile, so it is handed to inductor as the options that
    `torch.compile(mode=...)` sets (`torch._inductor.list_mode_options`, the table torch.compile's doc points to).
    """

    def __init__(self, inner: str = "inductor", mode: str = "default"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
        if mode != "default" and inner != "inductor":
            raise ValueError(f"compile mode {mode!r} needs the inductor backend, not {inner!r}")
        self.inner, self.mode, self.compiles = inner, mode, 0

    def backend(self, gm: torch.fx.GraphModule, example_inputs):
        self.compiles += 1
        from torch._dynamo import lookup_backend  # documented entry for composing backends

        if self.mode == "default":
            return lookup_backend(self.inner)(gm, example_inputs)
        options = torch._inductor.list_mode_options(self.mode)
        return lookup_backend(self.inner)(gm, example_inputs, config_patches=options)


class RecompileWatch(logging.Handler):
    """Context manager: ``hit`` is True when dynamo logged that it hit a recompile limit (it then runs the frame
    eagerly)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.hit, self.message = False, ""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(m in text for m in _LIMIT_MARKERS):
            self.hit, self.message = True, text.splitlines()[0][:200]

    def __enter__(self) -> RecompileWatch:
        logging.getLogger(DYNAMO_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(DYNAMO_LOGGER).removeHandler(self)
