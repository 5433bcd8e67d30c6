# VTAB-1k, ViT-B/16 VPT-deep with one prompt set shared by all 12 layers
# (the paper's sharing ablation) instead of one set per layer.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(prompt_shared=True))
