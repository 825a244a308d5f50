"""``python -m lbam.data {download,info} dataset=<name> [hydra overrides]``: fetch a dataset or summarise it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
USAGE = "usage: python -m lbam.data {download,info} dataset=bccd|oxford_pets|synthetic_bccd|synthetic_pets [key=value ...]"


def build(overrides: list[str]):
    """Compose ``configs/data.yaml`` with ``overrides`` and instantiate the dataset's DataModule."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="data", overrides=overrides)
    return instantiate(cfg.dataset, _convert_="all")


def info(dm) -> str:
    """Human-readable summary: root, per-split and per-class counts, skipped items, cache file."""
    t0 = time.perf_counter()
    dm.setup()
    m = dm.metadata
    lines = [
        f"dataset   {m['dataset']}" + ("  (SYNTHETIC)" if m["synthetic"] else ""),
        f"root      {m['root']}",
        f"cache     {m['cache']} ({'hit' if dm.cache_hit else 'built'} in {time.perf_counter() - t0:.1f} s)",
        f"images    {m['image_size']}x{m['image_size']}, {m['n_total']} samples, split seed {m['split_seed']}",
        f"{'split':<8}{'total':>7}" + "".join(f"{c:>11}" for c in dm.class_names),
    ]
    for split in ("train", "val", "test"):
        counts = m["class_counts"][split]
        lines.append(f"{split:<8}{sum(counts):>7}" + "".join(f"{n:>11}" for n in counts))
    lines.append(f"skipped   {m['skipped']}")
    lines += [f"  {s['id']}: {s['reason']}" for s in m["skipped_items"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lbam.data.download import DatasetNotFoundError, UnsafeArchiveError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("download", "info"):
        print(USAGE, file=sys.stderr)
        return 2
    command, overrides = argv[0], argv[1:]
    try:
        if command == "download":
            dm = build([*overrides, "dataset.download=true"])
            dm.prepare_data()
            print(f"{dm.name}: ready at {dm.dataset_dir().resolve()}")
        else:
            print(info(build(overrides)))
    except (DatasetNotFoundError, UnsafeArchiveError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # Hydra: unknown dataset or bad override syntax
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {e}\n{USAGE}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
