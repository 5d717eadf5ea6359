#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU, from the repository root:
#   bash bench/prepare_gpu_data.sh     (here, once: WikiText-2 into shared/data, ignored by git)
#   bash bench/gpu_check.sh            (there: results in $OUT when set, else a temporary folder)
# Every part runs, in its own process and under its own time limit, even when one before it
# failed; the whole check ends within ARLM_CHECK_DEADLINE seconds (480) with one table of
# figures and targets, arlm beside bench/reference.py on the same GPU (bench/gpu_check.py says
# what each part measures). Exit code 1 when a part failed; a missed target only shows in the
# table. ARLM_CHECK_DEVICE=cpu runs it all on the CPU at toy sizes (a smoke test of the script);
# ARLM_CHECK_PARTS=tokenize,budget runs only the parts whose names start so.
# It needs python3 with torch (CUDA), numpy, sentencepiece, safetensors, typer, rich, pytest and
# hypothesis (wheels in .whl/ are installed when pytest is missing); arlm runs from this checkout.
set -uo pipefail # no -e: a failing part must not stop the others
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RESULTS="${OUT:-$(mktemp -d)}"
WORK="$(mktemp -d)" # datasets and checkpoints (a gigabyte): never in $OUT, which comes back
if ! python3 -c "import pytest, hypothesis" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install --quiet --no-index --find-links .whl pytest hypothesis
fi
python3 -m bench.gpu_check all "$WORK" "$RESULTS"
code=$?
echo "results: $RESULTS/gpu_check.md, gpu_check.json, gpu_check.log; work files: $WORK" >&2
exit $code
