# VTAB-1k, VPT-shallow on MoCo v3 ViT-B/16: prompts enter the first block
# only. Everything else as vit-b16-mocov3_vpt-deep.py.
_base_ = ['./vit-b16-mocov3_vpt-deep.py']
model = dict(backbone=dict(prompt_layers='shallow'))
