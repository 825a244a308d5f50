#!/usr/bin/env bash
# The device call for `make device-check` on a lent GPU machine (this workplace's device tool), prepared with #30
# and not sent yet: no GPU was lent to that session. Here first, where pip reaches an index (the machine has none):
#   make wheels && git rev-parse HEAD > .whl/COMMIT  # .whl/: hydra-core, omegaconf, antlr4 runtime, joblib launcher
#   ln -sfn ../shared/data .devdata                  # a link, not a copy: carry takes the real BCCD through it
# then one call (about 10 MB carried; the check starts no work after 510 s, `timeout` caps it at 580 s):
#   run(command="bash results/bench/gpu/device_check_call.sh", carry=[".whl", ".devdata/BCCD"], timeout_s=600)
# (Here, the same script checks the CPU path: DEVICE=cpu OUT=/tmp/o bash results/bench/gpu/device_check_call.sh)
# What comes back ($OUT: at most 8 files): the table (.md, .json), the check's log, env.log and the runs' rows,
# logs and predictions (runs.tgz, without checkpoints and caches).
set -u
export PYTHONUNBUFFERED=1 LBAM_DATA_DIR=${LBAM_DATA_DIR:-$PWD/.devdata}
{ nvidia-smi; nproc; free -g; cat .whl/COMMIT
  python3 -c "import sys, torch; print(sys.version, torch.__version__, torch.version.cuda)"; } > "$OUT/env.log" 2>&1
if command -v make > /dev/null; then
  timeout 580 make device-check OUT=/tmp/dc ${DEVICE:+DEVICE=$DEVICE} > "$OUT/device_check.log" 2>&1
else # what the target does, without make
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target .whl/site .whl/*.whl &&
    PYTHONPATH=$PWD/.whl/site timeout 580 python3 scripts/device_check.py --out /tmp/dc ${DEVICE:+--device $DEVICE} \
      > "$OUT/device_check.log" 2>&1
fi
echo "[call] exit $?" >> "$OUT/device_check.log"
cp /tmp/dc/device_check.md /tmp/dc/device_check.json "$OUT/" 2> /dev/null
tar czf "$OUT/runs.tgz" -C /tmp/dc --exclude='*.ckpt' --exclude=cache --exclude=twin --exclude=tmp . 2> /dev/null
tail -70 "$OUT/device_check.log"
