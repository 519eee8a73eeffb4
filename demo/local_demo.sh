#!/usr/bin/env bash
# The first thing a newcomer runs: a local dataset read cold then warm through edgecache, with
# the cache's own report. No cloud account, no cluster. Everything lives under $DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
EC=.venv/bin/edgecache
DEMO_DIR=${DEMO_DIR:-$(mktemp -d -t edgecache-demo.XXXXXX)}
DATA="$DEMO_DIR/dataset"
export EDGECACHE_CACHE_DIR="$DEMO_DIR/cache"
mkdir -p "$DATA/images"

echo "== 1. a dataset: one 64 MiB shard and 200 small images (random bytes) in $DATA"
.venv/bin/python - "$DATA" <<'PY'
import os, sys
root = sys.argv[1]
with open(os.path.join(root, "train-000.shard"), "wb") as f:
    f.write(os.urandom(64 * 1024 * 1024))
for i in range(200):
    with open(os.path.join(root, "images", f"{i:04d}.jpg"), "wb") as f:
        f.write(os.urandom(16 * 1024))
PY

echo "== 2. list it through the metadata cache"
$EC ls -l "file://$DATA"

read_all() {
  $EC cat "file://$DATA/train-000.shard" > /dev/null
  # shellcheck disable=SC2046
  $EC cat $(printf "file://$DATA/images/%04d.jpg " $(seq 0 199)) > /dev/null
}
echo "== 3. cold read (every block comes from the backend and is stored in the SSD tier)"
TIMEFORMAT='   cold: %R s'
time read_all
echo "== 4. warm read, a new process (served from the SSD tier, checksums verified)"
TIMEFORMAT='   warm: %R s'
time read_all
cmp <($EC cat "file://$DATA/train-000.shard") "$DATA/train-000.shard" && echo "   bytes identical to the source"

echo "== 5. what the cache did (summed over every process that used $EDGECACHE_CACHE_DIR)"
$EC stats
echo
echo "Demo data and cache are in $DEMO_DIR (delete it when done)."
