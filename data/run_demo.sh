#!/usr/bin/env bash
# The main job on the built-in data, start to finish:
#   generate the demo videos -> extract frames and optical flow -> train the spatial and the temporal
#   stream -> evaluate both (multi-clip, multi-crop) -> late-fuse -> print the table.
#
#   bash data/run_demo.sh [OUT_DIR]        (default OUT_DIR: demo_out)
#
# Sizes can be turned down through the environment (the tests do): VIDEOS_PER_CLASS, EPOCHS,
# SAMPLES_PER_VIDEO, EVAL_CLIPS, EVAL_CROPS, WIDTH, METHOD; DEVICE=cuda trains and evaluates on a GPU.
set -euo pipefail

OUT=${1:-demo_out}
VIDEOS_PER_CLASS=${VIDEOS_PER_CLASS:-32}
EPOCHS=${EPOCHS:-8}
SAMPLES_PER_VIDEO=${SAMPLES_PER_VIDEO:-4}
EVAL_CLIPS=${EVAL_CLIPS:-10}
EVAL_CROPS=${EVAL_CROPS:-5}
WIDTH=${WIDTH:-32}
DEVICE=${DEVICE:-cpu}
METHOD=${METHOD:-farneback}   # TV-L1 is the default of 'flowprep extract', but takes minutes here
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

python "$HERE/make_demo.py" "$OUT/videos" --videos-per-class "$VIDEOS_PER_CLASS"
flowprep extract "$OUT/videos" -o "$OUT/store" --size 64x64 --method "$METHOD" --jobs 2 --quiet

train() {  # $1 = stream
  twostream train --store "$OUT/store" --stream "$1" --split 1 --arch resnet18 --width "$WIDTH" \
    --input-size 56 --epochs "$EPOCHS" --batch-size 32 --lr 0.02 --samples-per-video "$SAMPLES_PER_VIDEO" \
    --workers 2 --device "$DEVICE" --quiet -o "$OUT/$1"
  twostream evaluate --checkpoint "$OUT/$1/last.pt" --store "$OUT/store" --clips "$EVAL_CLIPS" \
    --crops "$EVAL_CROPS" --workers 2 --device "$DEVICE" --quiet -o "$OUT/$1/scores.npz"
}
train spatial
train temporal

twostream fuse "$OUT/spatial/scores.npz" "$OUT/temporal/scores.npz" --report "$OUT/report.json"
twostream report "$OUT/spatial/scores.npz" "$OUT/temporal/scores.npz" -o "$OUT/report.html" --title "twostream demo" \
  > /dev/null
echo "open $OUT/report.html in a browser: the results page (table, per-class accuracy, confusion, worst videos" \
     "with their flow, curves); also $OUT/report.json, $OUT/fused_confusion.png, $OUT/{spatial,temporal}/curves.png"
