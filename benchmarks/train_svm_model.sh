#!/usr/bin/env bash
# The recipe of the shipped SVM model (sppdet/models/voc07_mobilenet_v2_svm, the paper's recipe), run end to end:
#
#   benchmarks/train_svm_model.sh CACHE_DIR [VOC2007_DIR]
#   SCALES=688 benchmarks/train_svm_model.sh CACHE_DIR   # one scale (about an hour)
#
# 1. selective search (fast, the shipped defaults) on all VOC 2007 train images;
# 2. MobileNetV2 conv maps at $SCALES (default the five scales 480-1200);
# 3. the development run: fine-tune fc6/fc7 and train fc7 SVMs (+ box regression) on the
#    2,000 dev-train ids, evaluate on the 500 dev-val ids, choose the per-class display
#    thresholds there, and measure the packed (int8) model on dev-val too;
# 4. the shipped run: the same recipe on all 2,500 train ids (nothing held out), with the
#    display thresholds from step 3, packed into the package.
# The development and shipped runs overlap (two jobs on two cores). Every stage resumes
# when re-run. Timings and peak memory (GNU time) go to CACHE_DIR/logs/*.time;
# CACHE_DIR/eval_*.json hold the development results. Needs TORCH_HOME (see README).
# DEV_ONLY=1 stops after the development run (a measurement; nothing is shipped).
# Set PACK_INTO= (empty) to leave the package's model alone; PACK_ARGS are passed to
# `sppdet pack` (default: int8 storage, fc6 at rank 384 fitted to its inputs on the
# training caches; measured in docs/results.md).
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
SCALES=${SCALES:-480 576 688 864 1200}
PACK_INTO=${PACK_INTO-sppdet/models/voc07_mobilenet_v2_svm}
read -r -a PACK_ARGS <<< "${PACK_ARGS---storage int8 --fc6-rank 384}"
tag=$(echo "$SCALES" | tr ' ' '_')   # e.g. 688, 480_576_688_864_1200
mkdir -p "$C/logs"
cd "$(dirname "$0")/.."

. benchmarks/lib.sh
run() {  # run NAME CMD...: log to $C/logs/NAME_<scales>.log, time and peak RSS to .time
    local name=${1}_$tag; shift
    timed "$name" "$C/logs/$name.time" "$@"
    echo "[$(date +%T)] $name done: $(cat "$C/logs/$name.time")"
}

feats=$C/voc07_mnv2_$tag
CACHES=(--proposals "$C/voc07_ss" --features "$feats")
scale_args=()
for s in $SCALES; do scale_args+=(--scales "$s"); done
SVM=(--head fc7 --svm-c 0.01 --retrain-every 8000 --max-negatives 8000 --quiet)
all_ids="$C/voc07_train_all.txt"
cat splits/voc07_dev_train.txt splits/voc07_dev_val.txt > "$all_ids"

run proposals $SPPDET proposals --voc "$V" --split train --method ss-fast --out "$C/voc07_ss" \
    --workers 2 --no-progress
run extract $SPPDET extract --voc "$V" --split train --proposals "$C/voc07_ss" \
    --out "$feats" "${scale_args[@]}" --threads 2

dev=$C/model_fc7_dev_$tag
run finetune_dev $SPPDET finetune --voc "$V" --ids splits/voc07_dev_train.txt "${CACHES[@]}" \
    --out "$dev" --quiet
(
    export OMP_NUM_THREADS=1
    run svm_dev $SPPDET train-svm --voc "$V" --ids splits/voc07_dev_train.txt "${CACHES[@]}" \
        "${SVM[@]}" --out "$dev"
    run eval_dev $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
        "${CACHES[@]}" --save-display-thresholds --json "$C/eval_fc7_dev_$tag.json"
    run eval_dev_nobbox $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
        "${CACHES[@]}" --no-bbox-reg --json "$C/eval_fc7_dev_${tag}_nobbox.json"
    $SPPDET pack "$dev" "${dev}_int8" "${PACK_ARGS[@]}" --calibrate "$feats" "$C/voc07_ss"
    run eval_dev_int8 $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt \
        --model "${dev}_int8" "${CACHES[@]}" --json "$C/eval_fc7_dev_${tag}_int8.json"
) &
dev_job=$!
if [ -n "${DEV_ONLY:-}" ]; then
    wait "$dev_job"
    echo "done (development run only): $C/eval_fc7_dev_$tag*.json"
    exit 0
fi

all=$C/model_fc7_all_$tag
export OMP_NUM_THREADS=1
run finetune_all $SPPDET finetune --voc "$V" --ids "$all_ids" "${CACHES[@]}" --out "$all" --quiet
run svm_all $SPPDET train-svm --voc "$V" --ids "$all_ids" "${CACHES[@]}" "${SVM[@]}" --out "$all"
wait "$dev_job"

# Display thresholds chosen on dev-val with the development model, written into the final one.
run thresholds $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
    "${CACHES[@]}" --save-display-thresholds --thresholds-into "$all" --no-coco
$SPPDET pack "$all" "${all}_int8" "${PACK_ARGS[@]}" --calibrate "$feats" "$C/voc07_ss"
if [ -n "$PACK_INTO" ]; then
    $SPPDET pack "$all" "$PACK_INTO" "${PACK_ARGS[@]}" --calibrate "$feats" "$C/voc07_ss"
fi
echo "done: ${all}_int8 ${PACK_INTO:+and $PACK_INTO}; development results in $C/eval_fc7_dev_$tag*.json"
