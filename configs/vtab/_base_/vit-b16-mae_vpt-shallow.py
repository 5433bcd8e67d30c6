# VTAB-1k, VPT-shallow on MAE ViT-B/16: prompts enter the first block only.
# Everything else as vit-b16-mae_vpt-deep.py.
_base_ = ['./vit-b16-mae_vpt-deep.py']
model = dict(backbone=dict(prompt_layers='shallow'))
