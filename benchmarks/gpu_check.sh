#!/usr/bin/env bash
# What a CPU cannot measure, on one GPU in under 8 minutes (budgeted for one
# H100 or H200: about 1 min each for the first three checks, 4 for the 7B).
# Each check writes benchmarks/results/gpu/NAME.md (and .json where the tool
# has one) and prints it:
#   precision_vit, precision_swin  fused vs plain attention; bf16 / fp16
#                                  frozen weights vs float32
#                                  (tools/analysis/precision_check.py)
#   lean_vs_full_setr              SETR-PUP ViT-L, 512x512, batch 2: VPT-deep
#                                  with bf16 frozen weights, checkpointed
#                                  blocks and heads vs full fine-tuning in
#                                  fp32, torch.cuda.max_memory_allocated
#                                  (tools/analysis/benchmark.py)
#   serve_mixed_vs_separate        8 tasks served as mixed batches on one
#                                  frozen backbone vs 8 separate segmentors
#                                  (tools/analysis/serve_benchmark.py)
#   giant_dinov3-7b16              DINOv3 ViT-7B/16 VPT-deep: build + load a
#                                  bf16 base file, one training step at
#                                  512x512, batch 1 (tools/analysis/giant_memory.py;
#                                  writes a random 13.4 GB base file into WORK)
#
# Usage:
#   benchmarks/gpu_check.sh                    all checks on cuda
#   CHECKS="precision lean" benchmarks/gpu_check.sh   some of them
#   DEVICE=cpu TOY=1 benchmarks/gpu_check.sh   toy sizes on a CPU (CI runs
#                                              this, so the script keeps working)
# OUT=DIR writes the results elsewhere, WORK=DIR holds scratch files,
# PY=PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
TOY=${TOY:-0}
OUT=${OUT:-benchmarks/results/gpu}
WORK=${WORK:-work_dirs/gpu_check}
CHECKS=${CHECKS:-precision lean serve giant}
mkdir -p "$OUT" "$WORK"

LEAN=(model.backbone.frozen_dtype=bf16 model.backbone.with_cp=True
      'activation_checkpointing=[decode_head,auxiliary_head]')
GIANT=configs/vpt_timm/upernet_dinov3-7b16_mln_vpt-deep-10_ade20k-512x512.py
if [ "$TOY" = 1 ]; then
  VIT_VPT=configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py
  SWIN_VPT=configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py
  # full fine-tuning of the same tiny ViT
  VIT_FULL=$WORK/setr_vit-tiny_full.py
  printf "_base_ = '%s'\nmodel = dict(backbone=dict(prompt_length=0, frozen_exclude=['all']))\n" \
    "$PWD/$VIT_VPT" > "$VIT_FULL"
  STEPS=(--warmup 0 --iters 1)
  SERVE=(configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py --tasks 2
         --requests 8 --clients 2 --image-size 64 --backbone-iters 1
         --backbone-warmup 0)
  # DINOv3-7B's architecture at 4 blocks of width 64, 64x64 crops
  GIANT_OPTIONS=(model.backbone.timm_kwargs.depth=4
    model.backbone.timm_kwargs.embed_dim=64
    model.backbone.timm_kwargs.num_heads=2 'model.backbone.out_indices=[0,1,2,3]'
    'model.neck.in_channels=[64,64,64,64]' model.neck.out_channels=32
    'model.decode_head.in_channels=[32,32,32,32]' model.decode_head.channels=16
    model.auxiliary_head.in_channels=32 model.auxiliary_head.channels=8
    'model.data_preprocessor.size=[64,64]')
  GIANT_BASE=$WORK/dinov3-7b16_toy_bf16.pth
else
  VIT_VPT=configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py
  VIT_FULL=configs/vpt/setr_vit-l_pup_full_ade20k-512x512.py
  SWIN_VPT=configs/vpt/upernet_swin_vpt_ade20k.py
  STEPS=(--warmup 1 --iters 3)
  SERVE=(configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py)
  GIANT_OPTIONS=()
  GIANT_BASE=$WORK/dinov3-7b16_random_bf16.pth
fi

header() {  # NAME COMMAND...: the result file's first lines
  local name=$1; shift
  echo "== $name: $*" >&2
  { echo "# $name"; echo; echo "Command: \`$*\`"; echo; } > "$OUT/$name.md"
}

check_precision() {
  local name config
  for name in vit swin; do
    config=$VIT_VPT; [ "$name" = swin ] && config=$SWIN_VPT
    header "precision_$name" "$PY" tools/analysis/precision_check.py "$config" --device "$DEVICE"
    "$PY" tools/analysis/precision_check.py "$config" --device "$DEVICE" \
      | tee -a "$OUT/precision_$name.md"
  done
}

check_lean() {
  local name=lean_vs_full_setr
  header $name "$PY" tools/analysis/benchmark.py "$VIT_FULL" --vs "$VIT_VPT" \
    --mode train --vs-cfg-options "${LEAN[*]}" "${STEPS[*]}"
  "$PY" tools/analysis/benchmark.py "$VIT_FULL" --vs "$VIT_VPT" --mode train \
    --vs-cfg-options "${LEAN[@]}" "${STEPS[@]}" --batch-size 2 \
    --device "$DEVICE" --out "$OUT/$name.json" | tee -a "$OUT/$name.md"
}

check_serve() {
  local name=serve_mixed_vs_separate
  header $name "$PY" tools/analysis/serve_benchmark.py "${SERVE[*]}" --modes mixed separate
  "$PY" tools/analysis/serve_benchmark.py "${SERVE[@]}" --modes mixed separate \
    --device "$DEVICE" --work-dir "$WORK/serve" --out "$WORK/serve/$name.json" \
    | tee -a "$OUT/$name.md"
  # (the tool also writes its own .md beside the .json, kept in WORK)
  cp "$WORK/serve/$name.json" "$OUT/$name.json"
}

check_giant() {
  local name=giant_dinov3-7b16
  local options=()
  [ ${#GIANT_OPTIONS[@]} -gt 0 ] && options=(--cfg-options "${GIANT_OPTIONS[@]}")
  header $name "$PY" tools/analysis/giant_memory.py "$GIANT" --base "$GIANT_BASE" "${options[*]}"
  "$PY" tools/analysis/giant_memory.py "$GIANT" --base "$GIANT_BASE" \
    --device "$DEVICE" --out "$OUT/$name.json" "${options[@]}" \
    | tee -a "$OUT/$name.md"
}

for check in $CHECKS; do
  case $check in
    precision|lean|serve|giant) "check_$check" ;;
    *) echo "unknown check '$check' (precision, lean, serve, giant)" >&2; exit 2 ;;
  esac
done
echo "results in $OUT" >&2
