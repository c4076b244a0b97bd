#!/usr/bin/env bash
# The recipe of the shipped model (sppdet/models/voc07_mobilenet_v2), run end to end:
#
#   benchmarks/train_default_model.sh CACHE_DIR [VOC2007_DIR]
#
# 1. selective search (fast, the shipped defaults) on all VOC 2007 train images;
# 2. MobileNetV2 conv maps at one scale (688);
# 3. the development run: fine-tune fc6/fc7 and train fc7 SVMs (+ box regression) on the
#    2,000 dev-train ids, evaluate on the 500 dev-val ids, choose the per-class display
#    thresholds there, and measure the packed (int8) model on dev-val too;
# 4. the shipped run: the same recipe on all 2,500 train ids (nothing held out), with the
#    display thresholds from step 3, packed into the package.
# The development and shipped runs overlap (two jobs on two cores). Every stage resumes
# when re-run. Timings and peak memory (GNU time) go to CACHE_DIR/logs/*.time;
# CACHE_DIR/eval_*.json hold the development results. Needs TORCH_HOME (see README).
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
PYTHON=${PYTHON:-python}
mkdir -p "$C/logs"
cd "$(dirname "$0")/.."

run() {  # run NAME CMD...: log to $C/logs/NAME.log, time and peak RSS to NAME.time
    local name=$1; shift
    echo "[$(date +%T)] $name: $*"
    /usr/bin/time -f "%e s wall, %U s user, %M KB peak RSS" -o "$C/logs/$name.time" "$@" \
        > "$C/logs/$name.log" 2>&1
    echo "[$(date +%T)] $name done: $(cat "$C/logs/$name.time")"
}

CACHES=(--proposals "$C/voc07_ss" --features "$C/voc07_mnv2_688")
SVM=(--head fc7 --svm-c 0.01 --retrain-every 8000 --max-negatives 8000 --quiet)
all_ids="$C/voc07_train_all.txt"
cat splits/voc07_dev_train.txt splits/voc07_dev_val.txt > "$all_ids"

run proposals $SPPDET proposals --voc "$V" --split train --method ss-fast --out "$C/voc07_ss" \
    --workers 2 --no-progress
run extract $SPPDET extract --voc "$V" --split train --proposals "$C/voc07_ss" \
    --out "$C/voc07_mnv2_688" --scales 688 --threads 2

dev=$C/model_fc7_dev
run finetune_dev $SPPDET finetune --voc "$V" --ids splits/voc07_dev_train.txt "${CACHES[@]}" \
    --out "$dev" --quiet
(
    export OMP_NUM_THREADS=1
    run svm_dev $SPPDET train-svm --voc "$V" --ids splits/voc07_dev_train.txt "${CACHES[@]}" \
        "${SVM[@]}" --out "$dev"
    run eval_dev $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
        "${CACHES[@]}" --save-display-thresholds --json "$C/eval_fc7_dev.json"
    run eval_dev_nobbox $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
        "${CACHES[@]}" --no-bbox-reg --json "$C/eval_fc7_dev_nobbox.json"
    $PYTHON -m sppdet.models.pack "$dev" "$C/model_fc7_dev_int8"
    run eval_dev_int8 $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt \
        --model "$C/model_fc7_dev_int8" "${CACHES[@]}" --json "$C/eval_fc7_dev_int8.json"
) &
dev_job=$!

all=$C/model_fc7_all
export OMP_NUM_THREADS=1
run finetune_all $SPPDET finetune --voc "$V" --ids "$all_ids" "${CACHES[@]}" --out "$all" --quiet
run svm_all $SPPDET train-svm --voc "$V" --ids "$all_ids" "${CACHES[@]}" "${SVM[@]}" --out "$all"
wait "$dev_job"

# Display thresholds chosen on dev-val with the development model, written into the final one.
run thresholds $SPPDET eval --voc "$V" --ids splits/voc07_dev_val.txt --model "$dev" \
    "${CACHES[@]}" --save-display-thresholds --thresholds-into "$all" --no-coco
$PYTHON -m sppdet.models.pack "$all" sppdet/models/voc07_mobilenet_v2
echo "done: sppdet/models/voc07_mobilenet_v2; development results in $C/eval_fc7_dev*.json"
