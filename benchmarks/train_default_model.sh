#!/usr/bin/env bash
# The recipe of the default shipped model (sppdet/models/voc07_mobilenet_v2), from nothing but
# the VOC 2007 folder; every step resumes when re-run (logs, GNU time and peak memory in
# CACHE_DIR/logs):
#
#   benchmarks/train_default_model.sh CACHE_DIR [VOC2007_DIR]
#
# 1. selective search (fast) on trainval (4,508 images here);
# 2. MobileNetV2 block-13 maps at $SCALES (default 688);
# 3. development run: conv fine-tuning through SPP (blocks 14-17 + a new 1x1 conv to 128
#    channels + fc6/fc7, softmax and box deltas) on train, packed like the shipped model
#    (int8 fc layers at fc6 rank $FC6_RANK, float16 conv top), evaluated on 500 seeded val ids
#    (splits/voc07_valsplit_val.txt) with the error analysis; the per-class display thresholds
#    chosen there go to the shipped model;
# 4. shipped run, at the same time on the other core: the same recipe on all of trainval
#    (nothing held out), packed the same way into PACK_INTO (default the package's model;
#    PACK_INTO= leaves it alone).
# Settings: ITERATIONS (default 12000), FC6_RANK (default 256; empty: full fc6), SCALES,
# TOP_ARGS (default "--conv-top 18 --top-reduce 128"), FLIP (default 0; 1: mirrored copies,
# 51.3 against 54.1 without at 8,000 iterations). Measured times: docs/results.md.
# The paper's recipe (fc7 SVMs, five scales) is benchmarks/train_svm_model.sh; other
# variants on train only: benchmarks/conv_finetune_dev.sh.
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
SCALES=${SCALES:-688}
ITERATIONS=${ITERATIONS:-12000}
FC6_RANK=${FC6_RANK-256}
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
pack_args=(--storage int8)
[ -n "$FC6_RANK" ] && pack_args+=(--fc6-rank "$FC6_RANK" --calibrate "$feats" "$C/voc07_ss")
rank_tag=${FC6_RANK:+_r$FC6_RANK}

# run NAME CMD...: a step skipped when $C/logs/NAME.time exists (the step finished)
. benchmarks/lib.sh

run proposals_trainval $SPPDET proposals --voc "$V" --split trainval --method ss-fast \
    --out "$C/voc07_ss" --workers 2 --no-progress
run "extract_trainval_$tag" $SPPDET extract --voc "$V" --split trainval --proposals "$C/voc07_ss" \
    --out "$feats" "${scale_args[@]}" --threads 2 "${flip_args[@]}"
dev=$C/model_conv_dev_${tag}_$ITERATIONS
all=$C/model_conv_all_${tag}_$ITERATIONS
packed_dev=${dev}_int8$rank_tag
(
    # One torch thread per training: the two runs share the two cores.
    export OMP_NUM_THREADS=1
    run "finetune_conv_dev_${tag}_$ITERATIONS" $SPPDET finetune --voc "$V" --split train "${CACHES[@]}" \
        "${TOP_ARGS[@]}" "${flip_args[@]}" --iterations "$ITERATIONS" --out "$dev" --quiet
    run "eval_conv_dev_${tag}_$ITERATIONS" $SPPDET eval --voc "$V" --ids "$val_ids" --model "$dev" \
        "${CACHES[@]}" --json "$C/eval_conv_dev_${tag}_$ITERATIONS.json" \
        --out "$C/eval_conv_dev_${tag}_$ITERATIONS"
    run "analyze_conv_dev_${tag}_$ITERATIONS" $SPPDET analyze --voc "$V" --ids "$val_ids" \
        --detections "$C/eval_conv_dev_${tag}_$ITERATIONS" --out "$C/eval_conv_dev_${tag}_$ITERATIONS"
    run "pack_conv_dev_${tag}_$ITERATIONS$rank_tag" $SPPDET pack "$dev" "$packed_dev" "${pack_args[@]}"
    run "eval_conv_dev_int8_${tag}_$ITERATIONS$rank_tag" $SPPDET eval --voc "$V" --ids "$val_ids" \
        --model "$packed_dev" "${CACHES[@]}" --json "$C/eval_conv_dev_int8_${tag}_$ITERATIONS$rank_tag.json" \
        --no-coco
) &
dev_job=$!
all_status=0 dev_status=0
OMP_NUM_THREADS=1 run "finetune_conv_all_${tag}_$ITERATIONS" $SPPDET finetune --voc "$V" --split trainval \
    "${CACHES[@]}" "${TOP_ARGS[@]}" "${flip_args[@]}" --iterations "$ITERATIONS" --out "$all" --quiet \
    || all_status=$?
wait "$dev_job" || dev_status=$?  # never leave the development run behind
if [ "$all_status" != 0 ] || [ "$dev_status" != 0 ]; then
    echo "failed (shipped run: exit $all_status, development run: exit $dev_status); logs in $C/logs;" \
         "run again to resume" >&2
    exit 1
fi
run "pack_conv_all_${tag}_$ITERATIONS$rank_tag" $SPPDET pack "$all" "${all}_int8$rank_tag" "${pack_args[@]}"
# Display thresholds: F1-optimal on the 500 val ids for the development model packed the same way.
run "thresholds_conv_${tag}_$ITERATIONS$rank_tag" $SPPDET eval --voc "$V" --ids "$val_ids" \
    --model "$packed_dev" "${CACHES[@]}" --save-display-thresholds \
    --thresholds-into "${all}_int8$rank_tag" --no-coco
if [ -n "$PACK_INTO" ]; then
    # The packed files as they are (packing again would rebuild fc6 at full rank); README.md stays.
    rm -rf "$PACK_INTO.new" && mkdir -p "$PACK_INTO.new"
    cp "${all}_int8$rank_tag"/{config.json,conv_top.npz,fc.npz} "$PACK_INTO.new/"
    [ -f "$PACK_INTO/README.md" ] && cp "$PACK_INTO/README.md" "$PACK_INTO.new/"
    rm -rf "$PACK_INTO.old" && { [ ! -d "$PACK_INTO" ] || mv "$PACK_INTO" "$PACK_INTO.old"; }
    mv "$PACK_INTO.new" "$PACK_INTO" && rm -rf "$PACK_INTO.old"
fi
echo "done: ${all}_int8$rank_tag ${PACK_INTO:+-> $PACK_INTO}; development results in" \
     "$C/eval_conv_dev_*${tag}_$ITERATIONS*.json"
