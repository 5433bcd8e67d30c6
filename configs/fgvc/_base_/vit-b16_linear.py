# FGVC, ViT-B/16 linear probing (paper row "Linear"): no prompts, frozen
# backbone, only the linear head on the [CLS] token trains.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(prompt_length=0, frozen_exclude=[]))
