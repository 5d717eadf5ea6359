#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU, from the repository root:
#   bash bench/gpu_check.sh            (results in $OUT when set, else a temporary folder)
# It needs python3 with torch (CUDA), numpy, sentencepiece, safetensors, typer, rich and
# matplotlib; arlm runs from this checkout (no install needed).
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m arlm tokenize --builtin python-docs --model-type char --out "$OUT/ds" --force
python3 bench/gpu_check.py "$OUT/ds" | tee "$OUT/gpu_check.json"
# the whole tool on CUDA: train (bf16 autocast), generate, eval
python3 -m arlm train --data "$OUT/ds" --out "$OUT/ck" --device cuda --max-steps 300 \
    --eval-every 150 --hidden-size 512 --batch-size 64 --bptt 128 --force
python3 -m arlm generate "$OUT/ck" --device cuda --prompt "The " --max-tokens 200 --seed 1
python3 -m arlm eval "$OUT/ck" --device cuda --data "$OUT/ds" --json
