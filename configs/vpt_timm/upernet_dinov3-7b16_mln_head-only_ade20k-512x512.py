# Head-only on DINOv3 ViT-7B/16: no prompts, the backbone is frozen, only
# the neck and heads train. Otherwise (weights, bfloat16 frozen weights
# built on the meta device, checkpointed blocks, data, schedule) as the
# VPT-deep row it inherits; the reference for it.
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), the rule of the ViT-L rows. This project's choice; the VPT paper
# has no such row, and the DINOv3 release's frozen-backbone recipe is a
# linear head (see the VPT-deep row).
_base_ = ['./upernet_dinov3-7b16_mln_vpt-deep-10_ade20k-512x512.py']

model = dict(backbone=dict(prompt_length=0, frozen_exclude=[]))
