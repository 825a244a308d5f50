"""Optional C++ kernel for LBAM's pooling on CPU (``csrc/gmp.cpp``), compiled on first use.

``cpu_ops()`` returns ``torch.ops.lbam`` (``pool_avgmax``: GAP, GMP and where each maximum is, in one pass over
F; ``add_max_grad_``: GMP's gradient added there), or None, and
then ``_fused`` uses the pure-PyTorch path, which gives the same values. None when ``LBAM_NO_EXT=1`` (for
ablations and tests) or when the build fails (no C++ compiler or ninja): a warning says why, once.

The build (~30 s, ``torch.utils.cpp_extension.load``) is cached per machine under ``TORCH_EXTENSIONS_DIR``
(default ``~/.cache/torch_extensions``) and rebuilt when the source changes. The build name carries the CPU
capability that PyTorch detects, so machines sharing a home directory do not load each other's AVX2 build.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "gmp.cpp"
DISABLE_ENV = "LBAM_NO_EXT"


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


@functools.cache
def _load():
    try:
        # cpp_extension logs a CUDA_HOME notice at import on machines without CUDA: irrelevant to a CPU op.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        capability = torch.backends.cpu.get_cpu_capability()  # DEFAULT, AVX2, AVX512, ...
        flags = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for is inline OpenMP code, as in PyTorch
        if platform.machine().lower() in ("x86_64", "amd64") and capability.startswith("AVX"):
            flags += ["-mavx2", "-mfma"]  # the vector extensions then compile to 256-bit instructions
        cpp_extension.load(
            name=f"lbam_cpu_{capability.lower()}",
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
        return torch.ops.lbam
    except Exception as err:  # no compiler/ninja, or a build error: the PyTorch path still works
        warnings.warn(f"lbam: C++ pooling kernel unavailable, using the PyTorch path ({err})", stacklevel=3)
        return None


def cpu_ops():
    """``torch.ops.lbam`` with the CPU kernels, or None (disabled, or the build failed)."""
    return None if disabled() else _load()
