# FGVC, ViT-B/16 bias tuning (paper row "Bias", BitFit-style): no prompts;
# every bias of the backbone and the head train.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(prompt_length=0, frozen_exclude=['bias']))
