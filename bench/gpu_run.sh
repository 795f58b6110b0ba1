#!/usr/bin/env bash
# The GPU check, as one script for the device tool (`run`, timeout ~540 s): writes its tables under $OUT.
#   bash bench/gpu_run.sh
# Steps in order of importance, each under its own timeout; what finished is in $OUT even if a later one is cut.
set -u
OUT=${OUT:-/tmp/gpu-bench}; mkdir -p "$OUT"
# The device machine has no network: its own torch (CUDA) is used; missing packages travel as
# wheels in .whl/ (see the device tool's README) and are installed by the caller before this script.
python -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)" \
  >"$OUT/versions.txt" 2>&1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
export OMP_WAIT_POLICY=PASSIVE
# 1. LLaMA-7B shapes, random fp16 weights, 128 x 2048 calibration (the paper's setting); target < 20 s, ratio <= 2.3
timeout 240 python bench/prune_speed.py --random llama-7b --device cuda --dtype float16 --nsamples 128 \
  --seqlen 2048 --methods wanda,wanda:2:4 --eval-windows 8 --json "$OUT/prune_speed.json" \
  >"$OUT/prune_speed.md" 2>"$OUT/prune_speed.log"
echo "prune_speed exit $?"
# 2. 2:4 semi-structured speed-up against dense at 1, 16 and 128 tokens
timeout 120 python bench/semi_structured.py --json "$OUT/semi_structured.json" \
  >"$OUT/semi_structured.md" 2>"$OUT/semi_structured.log"
echo "semi_structured exit $?"
# 3. the 7B, weights in host memory, the device capped at 4 GiB (smaller than the 12.6 GiB model)
timeout 120 python bench/prune_speed.py --random llama-7b --device cuda --dtype float16 --nsamples 128 \
  --seqlen 2048 --methods wanda --offload --device-memory-gib 4 --json "$OUT/offload.json" \
  >"$OUT/offload.md" 2>"$OUT/offload.log"
echo "offload exit $?"
# 4. accelerate's device_map: LLaMA-1B shapes (2.2 GB fp16) under 1 GiB of GPU and 1 GiB of host memory, the rest on disk
timeout 90 python bench/prune_speed.py --random llama-1b --device cuda --dtype float16 --nsamples 128 \
  --seqlen 2048 --methods wanda --max-memory 0=1GiB,cpu=1GiB --json "$OUT/accelerate.json" \
  >"$OUT/accelerate.md" 2>"$OUT/accelerate.log"
echo "accelerate exit $?"
cat "$OUT"/*.md
