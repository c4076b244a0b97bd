#!/usr/bin/env bash
# Development measurements of conv fine-tuning through SPP (issue: accuracy), one step after
# another, each skipped when its output exists (re-run to resume):
#
#   benchmarks/conv_finetune_dev.sh CACHE_DIR [VOC2007_DIR]
#
# Train on the VOC 2007 train split (2,500 images), evaluate on 500 seeded ids of val
# (splits/voc07_valsplit_val.txt, made by `sppdet make-split --split val --val 500 --seed 0`).
# SCALES (default 688) are the cached scales; variants (VARIANTS, default all, in order):
#   conv    MobileNetV2 blocks 14-17 fine-tuned with fc6/fc7 through SPP (stride 32), softmax + box deltas
#   convr   the same with a new 1x1 conv to 128 channels after block 17 (pooled feature 6,400 long)
#   convrflip  convr trained on left-right mirrored copies too (mirrored maps: `extract --flip`)
#   frozen  the same deeper layer without conv fine-tuning (blocks 14-17 at ImageNet weights)
#   frozenr convr without conv fine-tuning (blocks 14-17 frozen; the new 1x1 reduction and fc6/fc7 trained)
#   fc      the shipped recipe's head: fc6/fc7 fine-tuned on block 13 (stride 16), fc7 SVMs + ridge box regression
#   convsvm the paper's SVMs (+ ridge box regression) on fc7 of the conv fine-tuned network
# Logs, GNU time (wall, peak memory) in CACHE_DIR/logs; metrics in CACHE_DIR/dev_<variant>_<scales>.json.
set -euo pipefail
C=${1:?usage: $0 CACHE_DIR [VOC2007_DIR]}
V=${2:-../shared/data/VOCdevkit/VOC2007}
SPPDET=${SPPDET:-sppdet}
SCALES=${SCALES:-688}
VARIANTS=${VARIANTS:-conv convr frozen fc convsvm}
ITERATIONS=${ITERATIONS:-5000}
# torch threads of extract: 1 when another CPU-heavy job runs (two threads sharing a busy core
# wait for each other at every barrier: 15x slower measured here)
EXTRACT_THREADS=${EXTRACT_THREADS:-2}
cd "$(dirname "$0")/.."
mkdir -p "$C/logs"
tag=$(echo "$SCALES" | tr ' ' '_')
train_ids=$V/ImageSets/Main/train.txt
val_ids=splits/voc07_valsplit_val.txt
all_ids=$C/dev_ids.txt
cat "$train_ids" "$val_ids" > "$all_ids"
scale_args=(); for s in $SCALES; do scale_args+=(--scales "$s"); done
feats=$C/voc07_mnv2_$tag
CACHES=(--proposals "$C/voc07_ss" --features "$feats")

# run NAME CMD...: a step skipped when $C/logs/NAME.time exists (the step finished)
. benchmarks/lib.sh
evaluate() {  # evaluate VARIANT MODEL_DIR
    run "eval_$1_$tag" $SPPDET eval --voc "$V" --ids "$val_ids" --model "$2" "${CACHES[@]}" \
        --json "$C/dev_$1_$tag.json" --out "$C/dev_$1_$tag"
    run "analyze_$1_$tag" $SPPDET analyze --voc "$V" --ids "$val_ids" \
        --detections "$C/dev_$1_$tag" --out "$C/dev_$1_$tag"
}

run proposals_dev $SPPDET proposals --voc "$V" --ids "$all_ids" --method ss-fast \
    --out "$C/voc07_ss" --workers 2 --no-progress
run "extract_dev_$tag" $SPPDET extract --voc "$V" --ids "$all_ids" --proposals "$C/voc07_ss" \
    --out "$feats" "${scale_args[@]}" --threads "$EXTRACT_THREADS"
case " $VARIANTS " in *flip*)  # the mirrored maps of the training images
    run "extract_flip_$tag" $SPPDET extract --voc "$V" --ids "$train_ids" --proposals "$C/voc07_ss" \
        --out "$feats" "${scale_args[@]}" --threads "$EXTRACT_THREADS" --flip;;
esac
for variant in $VARIANTS; do
    case $variant in
    conv|convr|convrflip|frozen|frozenr)
        extra=(); [ "$variant" = frozen ] && extra=(--freeze-top)
        [ "$variant" = frozenr ] && extra=(--freeze-top --top-reduce 128)
        [ "$variant" = convr ] && extra=(--top-reduce 128)
        [ "$variant" = convrflip ] && extra=(--top-reduce 128 --flip)
        m=$C/model_${variant}${ITERATIONS}_$tag
        run "finetune_${variant}${ITERATIONS}_$tag" $SPPDET finetune --voc "$V" --ids "$train_ids" "${CACHES[@]}" \
            --out "$m" --conv-top 18 --iterations "$ITERATIONS" "${extra[@]}" --quiet
        evaluate "${variant}${ITERATIONS}" "$m";;
    fc)
        m=$C/model_fc_$tag
        run "finetune_fc_$tag" $SPPDET finetune --voc "$V" --ids "$train_ids" "${CACHES[@]}" \
            --out "$m" --quiet
        run "svm_fc_$tag" $SPPDET train-svm --voc "$V" --ids "$train_ids" "${CACHES[@]}" --head fc7 \
            --svm-c 0.01 --retrain-every 8000 --max-negatives 8000 --out "$m" --quiet
        evaluate fc "$m";;
    convsvm)
        m=$C/model_convsvm_$tag
        run "svm_convsvm_$tag" $SPPDET train-svm --voc "$V" --ids "$train_ids" "${CACHES[@]}" \
            --head fc7 --finetuned "$C/model_conv_$tag" --svm-c 0.01 --retrain-every 8000 \
            --max-negatives 8000 --out "$m" --quiet
        evaluate convsvm "$m";;
    skip) ;;  # only the shared steps (proposals, maps)
    *) echo "unknown variant $variant" >&2; exit 2;;
    esac
done
echo "done: $C/dev_*_$tag.json"
