#!/usr/bin/env bash
# The conv fine-tuned recipe end to end, from nothing but the VOC folder (every step resumes
# when re-run; logs and GNU time in CACHE_DIR/logs):
#
#   benchmarks/train_conv_model.sh CACHE_DIR [VOC2007_DIR]
#
# 1. selective search (fast) on trainval (4,508 images);
# 2. MobileNetV2 block-13 maps at $SCALES (default 688, the measured recipe; "480 576 688 864 1200"
#    for five scales, not yet measured with conv fine-tuning);
# 3. development run: conv fine-tuning (blocks 14-17 + fc6/fc7 through SPP, softmax + box
#    deltas) on train, evaluated on 500 seeded val ids (splits/voc07_valsplit_val.txt), with
#    the per-class display thresholds chosen there, packed (int8, conv top float16) and
#    evaluated again;
# 4. shipped run: the same on all of trainval (nothing held out), thresholds from step 3,
#    packed into PACK_INTO (default the package's model; PACK_INTO= leaves it alone).
# The development and shipped trainings run at the same time, one thread each.
# Set TOP_ARGS (default "--conv-top 18 --top-reduce 128"), ITERATIONS (default 8000), FLIP
# (default 0; 1: mirrored copies, `extract --flip` + `finetune --flip`: 51.3 against 54.1 without at
# 8,000 iterations, docs/results.md).
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
SCALES=${SCALES:-688}
ITERATIONS=${ITERATIONS:-8000}
FLIP=${FLIP:-0}
flip_args=(); [ "$FLIP" = 1 ] && flip_args=(--flip)
read -r -a TOP_ARGS <<< "${TOP_ARGS---conv-top 18 --top-reduce 128}"
PACK_INTO=${PACK_INTO-sppdet/models/voc07_mobilenet_v2}
cd "$(dirname "$0")/.."
mkdir -p "$C/logs"
tag=$(echo "$SCALES" | tr ' ' '_')
scale_args=(); for s in $SCALES; do scale_args+=(--scales "$s"); done
feats=$C/voc07_mnv2_$tag
CACHES=(--proposals "$C/voc07_ss" --features "$feats")
val_ids=splits/voc07_valsplit_val.txt

# run NAME CMD...: a step skipped when $C/logs/NAME.time exists (the step finished)
. benchmarks/lib.sh

run proposals_trainval $SPPDET proposals --voc "$V" --split trainval --method ss-fast \
    --out "$C/voc07_ss" --workers 2 --no-progress
run "extract_trainval_$tag" $SPPDET extract --voc "$V" --split trainval --proposals "$C/voc07_ss" \
    --out "$feats" "${scale_args[@]}" --threads 2 "${flip_args[@]}"
dev=$C/model_conv_dev_$tag
all=$C/model_conv_all_$tag
(
    export OMP_NUM_THREADS=1
    run "finetune_conv_dev_$tag" $SPPDET finetune --voc "$V" --split train "${CACHES[@]}" \
        "${TOP_ARGS[@]}" "${flip_args[@]}" --iterations "$ITERATIONS" --out "$dev" --quiet
    run "eval_conv_dev_$tag" $SPPDET eval --voc "$V" --ids "$val_ids" --model "$dev" "${CACHES[@]}" \
        --save-display-thresholds --json "$C/eval_conv_dev_$tag.json" --out "$C/eval_conv_dev_$tag"
    run "analyze_conv_dev_$tag" $SPPDET analyze --voc "$V" --ids "$val_ids" \
        --detections "$C/eval_conv_dev_$tag" --out "$C/eval_conv_dev_$tag"
    [ -d "${dev}_int8" ] || $SPPDET pack "$dev" "${dev}_int8" --storage int8
    run "eval_conv_dev_int8_$tag" $SPPDET eval --voc "$V" --ids "$val_ids" --model "${dev}_int8" \
        "${CACHES[@]}" --json "$C/eval_conv_dev_int8_$tag.json"
) &
dev_job=$!
OMP_NUM_THREADS=1 run "finetune_conv_all_$tag" $SPPDET finetune --voc "$V" --split trainval \
    "${CACHES[@]}" "${TOP_ARGS[@]}" "${flip_args[@]}" --iterations "$ITERATIONS" --out "$all" --quiet
wait "$dev_job"
run "thresholds_conv_$tag" $SPPDET eval --voc "$V" --ids "$val_ids" --model "$dev" "${CACHES[@]}" \
    --save-display-thresholds --thresholds-into "$all" --no-coco
$SPPDET pack "$all" "${all}_int8" --storage int8
if [ -n "$PACK_INTO" ]; then $SPPDET pack "$all" "$PACK_INTO" --storage int8; fi
echo "done: ${all}_int8 ${PACK_INTO:+and $PACK_INTO}; development results in $C/eval_conv_dev_$tag*.json"
