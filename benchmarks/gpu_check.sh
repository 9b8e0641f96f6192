#!/usr/bin/env bash
# The GPU check of issue 14, about 5 minutes on one GPU with torch and no package registry.
#
# Here, once: mkdir -p .data && cp ../shared/data/cifar10-jpg.tar.gz .data/   (.data/ is ignored
# by git; name it in the device tool's carry). There: bash benchmarks/gpu_check.sh
# Prints one JSON line (also written to $OUT/gpu_check.json when $OUT is set); extra arguments go
# to benchmarks/gpu_check.py (e.g. --compile, --device cpu --model ge2mst_cifar_tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
DATA=${DATA:-.data/cifar10-jpg.tar.gz}
if [ ! -f "$DATA" ]; then
  echo "gpu_check: $DATA not found: copy ../shared/data/cifar10-jpg.tar.gz into .data/ first" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
line=$(python3 benchmarks/gpu_check.py --data "$DATA" --data-dir "${TMPDIR:-/tmp}/ge2mst-gpu-check" "$@" | tail -n 1)
echo "$line"
if [ -n "${OUT:-}" ]; then echo "$line" > "$OUT/gpu_check.json"; fi
