#!/usr/bin/env bash
# One device call: imports check, benchmark (UNet), then the paper profile notebooks in
# order until the deadline; logs, results and figures go to $OUT.
set -u
export PYTHONPATH=$PWD:$PWD/.gpu/shim REUSE_DATA_DIR=$PWD/.data/fashion-mnist MPLBACKEND=Agg
DEADLINE=$(( $(date +%s) + ${BUDGET:-540} ))
mkdir -p $OUT/results $OUT/figures
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python -c "import torch, pandas, scipy, sklearn, seaborn, torchmetrics, matplotlib; print(torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a $OUT/gpu.txt
left() { echo $(( DEADLINE - $(date +%s) )); }
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout 150 python benchmarks/bench.py --device cuda --out $OUT/results 2>&1 | grep -v Warning | tee $OUT/bench-unet.log
fi
for nb in ${NBS:-01_network_reusability 02_layer_selection 03_rmse_threshold 04_small_data_transfer}; do
  l=$(left); [ $l -lt 20 ] && { echo "SKIP $nb: $l s left" | tee -a $OUT/paper.log; continue; }
  start=$(date +%s)
  timeout $l python .gpu/run_nb.py notebooks/$nb.ipynb \
    "{\"profile\": \"${PROFILE:-paper}\", \"device\": \"${DEVICE:-cuda}\", \"cache_dir\": \"$PWD/.cache/runs\", \"figures_dir\": \"$OUT/figures\", \"results_dir\": \"$OUT/results\"}" \
    > $OUT/$nb.log 2>&1
  rc=$?
  echo "$nb rc=$rc wall=$(( $(date +%s) - start )) s" | tee -a $OUT/paper.log
  tail -3 $OUT/$nb.log
done
tar czf $OUT/results.tgz -C $OUT results figures 2>/dev/null; rm -rf $OUT/figures $OUT/results
