#!/usr/bin/env bash
# Before a GPU check, on this machine, from the repository root: copy WikiText-2 (train and
# valid) from ../shared/data into shared/data/, which .git/info/exclude keeps out of git. The
# device tool sends the checkout but not ../shared, so the run then names it in carry:
#   bash bench/prepare_gpu_data.sh
#   device run: command "bash bench/gpu_check.sh", carry ["shared/data"]
# What travels is limited to 64 MiB in all (the checkout included): the copy checks its size.
set -euo pipefail
SOURCE="${SHARED_DATA:-../shared/data}/wikitext-2"
TARGET=shared/data/wikitext-2
LIMIT_MB=48 # of the 64 MiB that travel, what the corpus may take (the checkout is < 1 MiB)
for name in train.txt valid.txt; do
    if [ ! -f "$SOURCE/$name" ]; then
        echo "error: $SOURCE/$name not found: set SHARED_DATA to the folder holding wikitext-2" >&2
        exit 1
    fi
done
grep -qxF '/shared/' .git/info/exclude 2>/dev/null || echo '/shared/' >>.git/info/exclude
mkdir -p "$TARGET"
cp "$SOURCE/train.txt" "$SOURCE/valid.txt" "$TARGET/"
size_mb=$(du -sm shared/data | cut -f1)
if [ "$size_mb" -gt "$LIMIT_MB" ]; then
    echo "error: shared/data holds ${size_mb} MB, over the ${LIMIT_MB} MB that may travel" >&2
    exit 1
fi
if [ -n "$(git status --porcelain --ignored=no shared)" ]; then
    echo "error: git sees shared/: add '/shared/' to .git/info/exclude" >&2
    exit 1
fi
echo "shared/data: ${size_mb} MB, ignored by git; carry [\"shared/data\"] in the device run"
