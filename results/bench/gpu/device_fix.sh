#!/usr/bin/env bash
# Second device call: embodiment 1 with CBAM (3 seeds at once) after the max-pool fix, then gpu-check's step
# speeds for none, cbam and lbam with the time left. TOTAL = seconds for both.
set -u
T0=$(date +%s)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
if [ -d .devgit ]; then rm -rf .git && mv .devgit .git && git config core.fileMode false; fi
export LBAM_DATA_DIR=$PWD/.devdata
git rev-parse HEAD; git status --porcelain --untracked-files=no | head -3
timeout "${CBAM_LIMIT:-130}" python3 -m lbam.train -m experiment=embodiment1 attention=cbam seed=0,1,2 hydra/launcher=parallel hydra.launcher.n_jobs=3 > $OUT/cbam.log 2>&1
echo "[device] cbam exit $? after $(( $(date +%s) - T0 )) s"
pkill -f 'loky|lbam.train'; sleep 1; pkill -9 -f 'loky|lbam.train'
grep -v "^warning: bccd\|num_workers\|LOCAL_RANK\|HYDRA" $OUT/cbam.log | tail -12
tar czf $OUT/cbam_runs.tgz results/runs/embodiment1 2>/dev/null
LEFT=$(( ${TOTAL:-215} - ($(date +%s) - T0) ))
echo "[device] steps get $LEFT s"
timeout "$LEFT" python3 scripts/gpu_check.py --out /tmp/gc2 --stages steps --attentions none,cbam,lbam > $OUT/steps.log 2>&1
cp /tmp/gc2/gpu_check.md $OUT/steps.md; cp /tmp/gc2/gpu_check.json $OUT/steps.json
cat $OUT/steps.md; tail -3 $OUT/steps.log
