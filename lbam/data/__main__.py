"""``python -m lbam.data {download,info} dataset=<name> [hydra overrides]``: fetch a dataset or summarise it."""

from __future__ import annotations

import logging
import sys
import time

from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lbam.data import verify
from lbam.data.errors import DataError, not_found
from lbam.paths import CONFIG_DIR  # also registers the path resolvers the configs use

USAGE = "usage: python -m lbam.data {download,info} dataset=bccd|oxford_pets|synthetic_bccd|synthetic_pets [key=value ...]"


def build(overrides: list[str]):
    """Compose ``configs/data.yaml`` with ``overrides`` and instantiate the dataset's DataModule."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="data", overrides=overrides)
    try:
        return instantiate(cfg.dataset, _convert_="all")
    except InstantiationException as e:  # Hydra wraps the constructor's error, e.g. an unknown key
        cause = e.__cause__
        raise (
            cause if isinstance(cause, DataError) else DataError(f"invalid dataset config: {cause}")
        ) from None


def info(dm) -> str:
    """Human-readable summary: per-split class counts and images, skipped items and duplicates, the cache."""
    t0 = time.perf_counter()
    quiet = logging.Filter()  # the skipped items are listed below, not logged
    quiet.filter = lambda record: not getattr(record, "lbam_skipped", False)
    logging.getLogger("lbam.data").addFilter(quiet)
    try:
        dm.setup()
    finally:
        logging.getLogger("lbam.data").removeFilter(quiet)
    m = dm.metadata
    subset = f", a subset of {m['train_subset']} (seed {m['subset_seed']})" if m["train_subset"] else ""
    lines = [
        f"dataset   {m['dataset']}" + ("  (SYNTHETIC)" if m["synthetic"] else ""),
        f"root      {m['root']}",
        f"content   sha256 {m['data_sha256']} ("
        + {True: "the pinned content", False: "differs from the pinned content", None: "nothing pins it"}[
            m["data_verified"]
        ]
        + ")",
        f"cache     {m['cache']} ({'hit' if dm.cache_hit else 'built'} in {time.perf_counter() - t0:.1f} s)",
        f"samples   {m['n_total']} from {m['n_images']} images at {m['image_size']}x{m['image_size']}, split "
        f"by {m['split_by']} (seed {m['split_seed']}); training split {m['n_train_split']}{subset}",
        f"{'split':<8}{'total':>7}{'images':>8}" + "".join(f"{c:>11}" for c in dm.class_names),
    ]
    for split in ("train", "val", "test"):
        counts = m["class_counts"][split]
        lines.append(
            f"{split:<8}{sum(counts):>7}{m['images'][split]:>8}" + "".join(f"{n:>11}" for n in counts)
        )
    lines.append(f"skipped   {m['skipped']}")
    lines += [f"  {s['id']}: {s['reason']}" for s in m["skipped_items"]]
    lines.append(f"duplicates {m['duplicates']} ({'dropped' if m['drop_duplicates'] else 'kept'})")
    lines += [f"  {d['id']} repeats {d['of']} (IoU {d['iou']})" for d in m["duplicate_items"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("download", "info"):
        print(USAGE, file=sys.stderr)
        return 2
    command, overrides = argv[0], argv[1:]
    try:
        if command == "download":
            dm = build([*overrides, "dataset.download=true"])
            dm.prepare_data()
            if not dm._exists():  # e.g. a twin's generation; a download that left nothing is an error
                raise not_found(dm.name, dm.dataset_dir(), dm.urls)
            verify.check_content(
                dm
            )  # "ready" only for the pinned content (or what dataset.verify=false takes)
            state = {True: "content verified", False: "content NOT verified", None: "no manifest to verify"}
            print(f"{dm.name}: ready at {dm.dataset_dir().resolve()} ({state[dm.data_verified]})")
        else:
            print(info(build(overrides)))
    except Exception as e:
        hydra = type(e).__module__.startswith(("hydra", "omegaconf"))  # unknown dataset, bad override syntax
        if not (hydra or isinstance(e, DataError | OSError)):
            raise
        print(f"error: {str(e).strip().splitlines()[0]}" + (f" ({USAGE})" if hydra else ""), file=sys.stderr)
        return 2 if hydra else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
