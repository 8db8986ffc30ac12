#!/usr/bin/env bash
# Direction-sensitive classes: what horizontal flips do to Left vs Right, and what --no-flip and --flip-map fix.
#
#   bash data/run_flip_demo.sh [OUT_DIR]        (default OUT_DIR: flip_demo_out)
#
# Renders the demo disc moving Left, Right, Up or Down (one colour: only the temporal stream matters here),
# extracts Farneback flow, trains the temporal stream three times (default flips; --no-flip; flips with the
# flip map "RedLeft RedRight") and evaluates each with evaluate's defaults (10 crops, mirrored views included
# unless the checkpoint says the model was trained without flips). Prints top-1 and the Left/Right rows.
# Sizes: VIDEOS_PER_CLASS, EPOCHS, SAMPLES_PER_VIDEO, WIDTH (environment).
set -euo pipefail

OUT=${1:-flip_demo_out}
VIDEOS_PER_CLASS=${VIDEOS_PER_CLASS:-12}
EPOCHS=${EPOCHS:-10}
SAMPLES_PER_VIDEO=${SAMPLES_PER_VIDEO:-4}
WIDTH=${WIDTH:-16}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

python "$HERE/make_demo.py" "$OUT/videos" --videos-per-class "$VIDEOS_PER_CLASS" --motions Left,Right,Up,Down --colours Red
flowprep extract "$OUT/videos" -o "$OUT/store" --size 64x64 --method farneback --jobs 2 --quiet
printf 'RedLeft RedRight\n' > "$OUT/flip_map.txt"

run() {  # $1 = name, then extra train options
  local name=$1; shift
  twostream train --store "$OUT/store" --stream temporal --arch resnet18 --width "$WIDTH" --input-size 56 \
    --epochs "$EPOCHS" --batch-size 32 --lr 0.02 --samples-per-video "$SAMPLES_PER_VIDEO" --workers 2 \
    --device cpu --quiet -o "$OUT/$name" "$@"
  twostream evaluate --checkpoint "$OUT/$name/last.pt" --store "$OUT/store" --clips 5 --workers 2 --device cpu \
    --quiet -o "$OUT/$name/scores.npz"
}
run flips
run no-flip --no-flip
run flip-map --flip-map "$OUT/flip_map.txt"

python - "$OUT" <<'PY'
import sys
import numpy as np
out = sys.argv[1]
print(f"{'training':10s} {'top1':>6s} {'Left right':>11s} {'Right right':>12s} {'Left->Right':>12s} {'Right->Left':>12s}")
for name in ("flips", "no-flip", "flip-map"):
    z = np.load(f"{out}/{name}/scores.npz")
    classes, pred, y = list(z["classes"]), z["scores"].argmax(1), z["labels"]
    L, R = classes.index("RedLeft"), classes.index("RedRight")
    def n(true, got):
        return int(((y == true) & (pred == got)).sum())
    print(f"{name:10s} {np.mean(pred == y):6.3f} {n(L, L):>6d} of {int((y == L).sum()):<2d} {n(R, R):>7d} of "
          f"{int((y == R).sum()):<2d} {n(L, R):>12d} {n(R, L):>12d}")
PY
