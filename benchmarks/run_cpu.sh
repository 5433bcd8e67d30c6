#!/usr/bin/env bash
# Every CPU number in benchmarks/README.md, one tools/analysis/benchmark.py
# command each (2-core shared machine: one intra-op thread, see the README).
# Usage: benchmarks/run_cpu.sh [NAME ...]   (default: all, in this order)
# On a GPU: DEVICE=cuda THREADS= benchmarks/run_cpu.sh ...  (results go to
# benchmarks/results/cuda/; memory is then torch.cuda.max_memory_allocated)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS-1}
OUT=benchmarks/results/$DEVICE
mkdir -p "$OUT"

VIT_VPT=configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py
VIT_FULL=configs/vpt/setr_vit-l_pup_full_ade20k-512x512.py
SWIN_VPT=configs/vpt/upernet_swin_vpt_ade20k.py
SWIN_FULL=configs/vpt/upernet_swin-b_full_ade20k-512x512.py
DINOV2_VPT=configs/vpt_timm/upernet_dinov2-l14-reg4_mln_vpt-deep-10_ade20k-512x512.py
NO_PROMPTS=(model.backbone.prompt_length=0 'model.backbone.frozen_exclude=[]')
PLAIN=(model.backbone.fused_attn=False)
VIT_L4=(model.backbone.num_layers=4 'model.backbone.out_indices=[0,1,2,3]')
SWIN_B6=('model.backbone.depths=[2,2,6,2]')
LEAN=(model.backbone.frozen_dtype=bf16 model.backbone.with_cp=True)
HEADS_CP=('activation_checkpointing=[decode_head,auxiliary_head]')
HEADS_LOSS_CP=('activation_checkpointing=[decode_head.loss,auxiliary_head.loss]')

bench() {  # NAME ARGS...
  local name=$1; shift
  echo "== $name: python tools/analysis/benchmark.py $*" >&2
  "$PY" tools/analysis/benchmark.py "$@" --device "$DEVICE" \
    ${THREADS:+--threads "$THREADS"} --batch-size 2 \
    --out "$OUT/$name.json" | tee "$OUT/$name.md"
}

serve() {  # NAME CONFIG ARGS...: tools/analysis/serve_benchmark.py
  local name=$1; shift
  echo "== $name: python tools/analysis/serve_benchmark.py $*" >&2
  "$PY" tools/analysis/serve_benchmark.py "$@" --device "$DEVICE" \
    --threads "${THREADS:-1}" --work-dir "work_dirs/serve_bench/$name" \
    --out "$OUT/$name.json"
}

run() {
  case $1 in
  # goal 2: backbone inference, VPT-deep 10 prompts vs no prompts
  g2_swin) bench $1 $SWIN_VPT --mode backbone --vs-cfg-options "${NO_PROMPTS[@]}" --warmup 1 --iters 5 --repeats 4 ;;
  g2_dinov2) bench $1 $DINOV2_VPT --mode backbone --vs-cfg-options "${NO_PROMPTS[@]}" --warmup 1 --iters 3 --repeats 3 ;;
  g2_vit) bench $1 $VIT_VPT --mode backbone --vs-cfg-options "${NO_PROMPTS[@]}" --warmup 1 --iters 3 --repeats 3 ;;
  # goal 1: whole-segmentor training step, VPT-deep vs full fine-tuning
  g1_vit) bench $1 $VIT_VPT --vs $VIT_FULL --mode train --warmup 1 --iters 2 --repeats 2 ;;
  g1_swin) bench $1 $SWIN_VPT --vs $SWIN_FULL --mode train --warmup 1 --iters 2 --repeats 2 ;;
  # the backbone's share of it (no heads)
  g1_vit_backbone) bench $1 $VIT_VPT --vs $VIT_FULL --mode train_backbone --warmup 1 --iters 2 --repeats 2 ;;
  g1_swin_backbone) bench $1 $SWIN_VPT --vs $SWIN_FULL --mode train_backbone --warmup 1 --iters 2 --repeats 2 ;;
  # where the memory goes: one step each, bytes by kind and by module
  mem_vit) bench $1 $VIT_VPT --vs $VIT_FULL --mode train --breakdown --warmup 0 --iters 1 ;;
  mem_swin) bench $1 $SWIN_VPT --vs $SWIN_FULL --mode train --breakdown --warmup 0 --iters 1 ;;
  # goal 3: memory-saving options for VPT-deep (B) against plain VPT-deep (A)
  g3_vit_cp) bench $1 $VIT_VPT --mode train --vs-cfg-options model.backbone.with_cp=True --warmup 1 --iters 2 ;;
  g3_swin_cp) bench $1 $SWIN_VPT --mode train --vs-cfg-options model.backbone.with_cp=True --warmup 1 --iters 2 ;;
  g3_vit_amp) bench $1 $VIT_VPT --mode train --vs-amp --warmup 1 --iters 2 ;;
  g3_swin_amp) bench $1 $SWIN_VPT --mode train --vs-amp --warmup 1 --iters 2 ;;
  # both options on VPT-deep (B) against full fine-tuning in fp32 (A)
  g3_vit_lean) bench $1 $VIT_FULL --vs $VIT_VPT --mode train --vs-amp --vs-cfg-options model.backbone.with_cp=True --warmup 1 --iters 2 ;;
  g3_swin_lean) bench $1 $SWIN_FULL --vs $SWIN_VPT --mode train --vs-amp --vs-cfg-options model.backbone.with_cp=True --warmup 1 --iters 2 ;;
  # issue 24: bf16 frozen weights + checkpointed layers (and heads) on
  # VPT-deep (B) against full fine-tuning in fp32 (A)
  g4_vit_backbone_bf16) bench $1 $VIT_FULL --vs $VIT_VPT --mode train_backbone --vs-cfg-options "${LEAN[@]}" --warmup 1 --iters 2 ;;
  # like for like: both checkpointed and under bf16 autocast (--amp)
  g4_vit_backbone_like) bench $1 $VIT_FULL --vs $VIT_VPT --mode train_backbone --amp --cfg-options model.backbone.with_cp=True --vs-cfg-options model.backbone.frozen_dtype=bf16 --warmup 1 --iters 2 ;;
  g4_setr_bf16) bench $1 $VIT_FULL --vs $VIT_VPT --mode train --vs-cfg-options "${LEAN[@]}" "${HEADS_CP[@]}" --warmup 1 --iters 2 ;;
  # the heads' losses inside their checkpoints too (logits not kept)
  g4_setr_bf16_loss) bench $1 $VIT_FULL --vs $VIT_VPT --mode train --vs-cfg-options "${LEAN[@]}" "${HEADS_LOSS_CP[@]}" --warmup 1 --iters 2 ;;
  # before/after: plain reference paths (A) vs the fast paths (B)
  ba_vit_vpt) bench $1 $VIT_VPT --mode train_backbone --cfg-options "${VIT_L4[@]}" "${PLAIN[@]}" --vs-cfg-options model.backbone.fused_attn=True --warmup 1 --iters 2 ;;
  ba_vit_full) bench $1 $VIT_FULL --mode train_backbone --cfg-options "${VIT_L4[@]}" "${PLAIN[@]}" --vs-cfg-options model.backbone.fused_attn=True --warmup 1 --iters 2 ;;
  ba_swin_vpt) bench $1 $SWIN_VPT --mode train_backbone --cfg-options "${SWIN_B6[@]}" "${PLAIN[@]}" --vs-cfg-options model.backbone.fused_attn=True --warmup 1 --iters 2 ;;
  ba_swin_full) bench $1 $SWIN_FULL --mode train_backbone --cfg-options "${SWIN_B6[@]}" "${PLAIN[@]}" --vs-cfg-options model.backbone.fused_attn=True --warmup 1 --iters 2 ;;
  ba_g2_swin) bench $1 $SWIN_VPT --mode backbone --cfg-options "${PLAIN[@]}" --vs-cfg-options "${NO_PROMPTS[@]}" --warmup 1 --iters 5 --repeats 3 ;;
  ba_g2_vit) bench $1 $VIT_VPT --mode backbone --cfg-options "${PLAIN[@]}" --vs-cfg-options "${NO_PROMPTS[@]}" --warmup 1 --iters 2 --repeats 2 ;;
  # serving: 8 tasks on one backbone vs per-task passes and 8 segmentors
  serve_tiny-vit) serve $1 configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py ;;
  serve_tiny-vit_mixed-lengths) serve $1 configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py --mixed-lengths ;;
  serve_tiny-swin) serve $1 configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py ;;
  serve_setr-vit-l) serve $1 $VIT_VPT --memory-only --image-size 512 --modes mixed --backbone-iters 2 --backbone-warmup 1 ;;
  serve_swin-b_memory) serve $1 $SWIN_VPT --memory-only --no-backbone --image-size 512 --modes mixed separate ;;
  *) echo "unknown benchmark $1" >&2; exit 2 ;;
  esac
}

ALL=(g2_swin g2_vit g2_dinov2 g1_vit g1_swin g1_vit_backbone g1_swin_backbone
     mem_vit mem_swin
     g3_vit_cp g3_swin_cp g3_vit_amp g3_swin_amp g3_vit_lean g3_swin_lean
     g4_vit_backbone_bf16 g4_vit_backbone_like g4_setr_bf16 g4_setr_bf16_loss
     ba_vit_vpt ba_vit_full ba_swin_vpt ba_swin_full ba_g2_swin ba_g2_vit
     serve_tiny-vit serve_tiny-vit_mixed-lengths serve_tiny-swin
     serve_setr-vit-l serve_swin-b_memory)
for name in "${@:-${ALL[@]}}"; do run "$name"; done
