# FGVC, ViT-B/16 VPT-shallow: prompts enter the first layer only (paper row
# "VPT-shallow"). Everything else as vit-b16_vpt-deep.py.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(prompt_layers='shallow'))
