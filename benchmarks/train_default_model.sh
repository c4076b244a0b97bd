#!/usr/bin/env bash
# The recipe of the default shipped model (sppdet/models/voc07_mobilenet_v2), from nothing but
# the VOC 2007 folder; every step resumes when re-run (logs, GNU time and peak memory in
# CACHE_DIR/logs):
#
#   benchmarks/train_default_model.sh CACHE_DIR [VOC2007_DIR]
#
# 1-2. selective search (fast) on the 2,500 train images and 500 seeded val ids
#      (splits/voc07_valsplit_val.txt); MobileNetV2 block-13 maps at scale 688;
# 3.   conv fine-tuning through SPP on train: blocks 14-17 + a new 1x1 conv to 128 channels
#      + fc6/fc7, softmax and box deltas, 8,000 iterations (benchmarks/conv_finetune_dev.sh,
#      variant convr); evaluated on the 500 val ids, with the error analysis;
# 4.   packed (int8 fc layers, float16 conv top), evaluated again, the per-class display
#      thresholds chosen on the 500 val ids, written into PACK_INTO (default the package's
#      model; PACK_INTO= leaves it alone).
# Measured here: about 100 minutes on 2 cores (proposals 32 min, maps 4 min, training 48-63 min,
# evaluations 5 min); docs/results.md. The paper's recipe (fc7 SVMs, five scales) is
# benchmarks/train_svm_model.sh; the same conv recipe on all of trainval is
# benchmarks/train_conv_model.sh.
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
ITERATIONS=${ITERATIONS:-8000}
PACK_INTO=${PACK_INTO-sppdet/models/voc07_mobilenet_v2}
cd "$(dirname "$0")/.."
mkdir -p "$C/logs"
. benchmarks/lib.sh
SCALES=688 VARIANTS=convr ITERATIONS=$ITERATIONS benchmarks/conv_finetune_dev.sh "$C" "$V"
model=$C/model_convr${ITERATIONS}_688
run pack_default $SPPDET pack "$model" "${model}_int8" --storage int8
run eval_default_int8 $SPPDET eval --voc "$V" --ids splits/voc07_valsplit_val.txt --model "${model}_int8" \
    --proposals "$C/voc07_ss" --features "$C/voc07_mnv2_688" --save-display-thresholds \
    --json "$C/eval_default_int8.json" --no-coco
if [ -n "$PACK_INTO" ]; then
    rm -rf "$PACK_INTO.new" && mkdir -p "$PACK_INTO.new"
    cp "${model}_int8"/{config.json,conv_top.npz,fc.npz} "$PACK_INTO.new/"
    [ -f "$PACK_INTO/README.md" ] && cp "$PACK_INTO/README.md" "$PACK_INTO.new/"
    rm -rf "$PACK_INTO.old" && { [ ! -d "$PACK_INTO" ] || mv "$PACK_INTO" "$PACK_INTO.old"; }
    mv "$PACK_INTO.new" "$PACK_INTO" && rm -rf "$PACK_INTO.old"
fi
echo "done: ${model}_int8 ${PACK_INTO:+-> $PACK_INTO}; results in $C/dev_convr${ITERATIONS}_688.json and $C/eval_default_int8.json"
