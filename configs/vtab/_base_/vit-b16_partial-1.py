# VTAB-1k, ViT-B/16 Partial-1 (paper row "Partial-1"): no prompts; the last
# Transformer layer and the final LayerNorm train with the linear [CLS]
# head, as in the public VPT code (which trains encoder layer 11 and
# encoder_norm). The class token, position embedding, patch embedding and
# the first 11 layers stay frozen. The backbone stays in eval mode
# (frozen_eval; its dropout and drop-path are 0 anyway).
# Learning rate: the prompt grid's rates (up to 50) are meant for prompts
# and heads; tools/vtab_sweep.py --method partial-1 searches
# mmseg_vpt.vtab.table.FULL_FT_LRS (our default), and base_lr is its middle.
_base_ = ['./vit-b16_linear.py']
base_lr = 0.001
model = dict(backbone=dict(partial_k=1))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
