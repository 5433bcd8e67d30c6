# FGVC, ViT-B/16 Sidetune (paper row "Sidetune"): the frozen ViT-B/16 of
# "Linear" beside a trained AlexNet-like side network (SideCNN's defaults:
# AlexNet's 5 convolutions, kernels, strides and pools), blended into the
# [CLS] feature by a learned alpha, as the VTAB-1k base
# configs/vtab/_base_/vit-b16_sidetune.py (whose comments give our
# defaults and the public code's). lr grid: the full fine-tuning one.
_base_ = ['./vit-b16_linear.py']
base_lr = 0.001
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.SidetuneBackbone',
        backbone={{_base_.model.backbone}},
        side=dict(type='SideCNN'),
        side_pool=6,
        alpha_init=1.0,
        alpha_form='linear',
        blend_patch_map=False))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
