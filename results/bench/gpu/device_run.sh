#!/usr/bin/env bash
# One device call: make gpu-check's script, then embodiment 1's protocol (make reproduce's first half) with the
# time left; everything that comes back goes under $OUT. TOTAL = seconds for both, GC_LIMIT = gpu-check's cap.
set -u
T0=$(date +%s)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
if [ -d .devgit ]; then rm -rf .git && mv .devgit .git && git config core.fileMode false; fi
export LBAM_DATA_DIR=$PWD/.devdata
{ nvidia-smi; nproc; free -g; git --version; git rev-parse HEAD; git status --porcelain --untracked-files=no | head
  python3 -c "import sys, torch, torchvision, pytorch_lightning as pl, torchmetrics, hydra, pandas, numpy, scipy; print(sys.version, torch.__version__, torchvision.__version__, pl.__version__, torchmetrics.__version__, hydra.__version__, pandas.__version__, numpy.__version__, scipy.__version__)"
  ls .devdata/BCCD; } 2>&1 | tee $OUT/env.log
# Output to files, not through tee: a worker left by a timeout would hold the pipe open and hang the call.
timeout "${GC_LIMIT:-400}" python3 scripts/gpu_check.py --out /tmp/gc > $OUT/gpu_check.log 2>&1
tail -45 $OUT/gpu_check.log
pkill -f lbam.train; sleep 1
cp /tmp/gc/gpu_check.md /tmp/gc/gpu_check.json $OUT/ 2>/dev/null
tar czf $OUT/gc_results.tgz -C /tmp/gc results 2>/dev/null
LEFT=$(( ${TOTAL:-570} - ($(date +%s) - T0) ))
echo "[device] protocol gets $LEFT s"
S=$(date +%s)
timeout "$LEFT" python3 scripts/reproduce.py --profile full --experiments embodiment1 --jobs "${JOBS:-6}" --no-estimate --no-report > $OUT/protocol.log 2>&1
rc=$?
pkill -f 'loky|lbam.train'; sleep 2; pkill -9 -f 'loky|lbam.train'
grep -v "^warning: bccd" $OUT/protocol.log | tail -25
echo "[device] protocol wall $(( $(date +%s) - S )) s, exit $rc" | tee -a $OUT/protocol.log
tar czf $OUT/e1_runs.tgz results/runs/embodiment1 2>/dev/null
ls -la $OUT
