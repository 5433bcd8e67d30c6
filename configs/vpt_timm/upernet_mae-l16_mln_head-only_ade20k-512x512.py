# Head-only on MAE ViT-L/16: no prompts, the backbone is frozen, only the
# neck and heads train. Otherwise (weights, data, schedule) as the VPT-deep
# row it inherits; the reference for it.
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe). This project's choice; the VPT paper has no such row.
_base_ = ['./upernet_mae-l16_mln_vpt-deep-10_ade20k-512x512.py']

model = dict(backbone=dict(prompt_length=0, frozen_exclude=[]))
