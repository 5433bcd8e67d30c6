# VTAB-1k, ViT-B/16 Adapter (paper row "Adapter"), reduction 8: no prompts;
# a bottleneck adapter (768 -> 96 -> 768, zero-initialised up-projection)
# after every layer's MLP trains with the linear [CLS] head
# (mmseg_vpt/models/adapters.py). The paper picks the reduction per task
# from {8, 64, 256}; this base fixes 8 (adapter_reduction=64 or 256 in
# --cfg-options for the others).
_base_ = ['./vit-b16_linear.py']
model = dict(backbone=dict(adapter_reduction=8, frozen_exclude=['adapter']))
