# FGVC, ViT-B/16 Adapter (paper row "Adapter"): a bottleneck adapter of
# reduction 8 after every MLP (the paper picks 8, 64 or 256 per dataset).
_base_ = ['./vit-b16_linear.py']
model = dict(backbone=dict(adapter_reduction=8, frozen_exclude=['adapter']))
