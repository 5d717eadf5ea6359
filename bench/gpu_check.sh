#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU, from the repository root:
#   bash bench/gpu_check.sh            (results in $OUT when set, else a temporary folder)
# It needs python3 with torch (CUDA), numpy, sentencepiece, safetensors, typer, rich and
# matplotlib (pytest and hypothesis for the tests; wheels in .whl/ are used when present);
# arlm runs from this checkout (no install needed). WikiText-2 is looked for in $WIKITEXT,
# ../shared/data/wikitext-2 and shared/data/wikitext-2; without it the word-level figures
# are left out.
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
if ! python3 -c "import pytest, hypothesis" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install --quiet --no-index --find-links .whl pytest hypothesis || true
fi
# 1. the tests that need CUDA: CPU and GPU agree (losses, block-wise loss, generation step,
#    checkpoints of cuDNN weights)
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
# 2. speed: LSTM 2x1024 char level (bf16, fp32), word-level WikiText-2 (bf16), generation
python3 -m arlm tokenize --builtin python-docs --model-type char --out "$OUT/ds" --force
WORD=""
for dir in "${WIKITEXT:-}" ../shared/data/wikitext-2 shared/data/wikitext-2; do
    if [ -n "$dir" ] && [ -f "$dir/train.txt" ]; then
        python3 -m arlm tokenize "$dir/train.txt" --val "$dir/valid.txt" --model-type word \
            --out "$OUT/word" --force
        WORD="$OUT/word"
        break
    fi
done
python3 bench/gpu_check.py "$OUT/ds" $WORD | tee "$OUT/gpu_check.json"
# 3. the whole tool on CUDA: train (bf16 autocast), generate, eval
python3 -m arlm train --data "$OUT/ds" --out "$OUT/ck" --device cuda --max-steps 300 \
    --eval-every 150 --hidden-size 512 --batch-size 64 --bptt 128 --force
python3 -m arlm generate "$OUT/ck" --device cuda --prompt "The " --max-tokens 200 --seed 1
python3 -m arlm eval "$OUT/ck" --device cuda --data "$OUT/ds" --json
