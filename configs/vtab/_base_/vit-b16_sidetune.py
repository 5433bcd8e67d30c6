# VTAB-1k, ViT-B/16 Sidetune (paper row "Sidetune"): the frozen ViT-B/16 of
# "Linear" beside a trained AlexNet-like side network (5 convolutions,
# 64-192-384-256-256 channels, AlexNet's kernels, strides and pools); the
# head reads alpha * cls + (1 - alpha) * linear(side features pooled to
# 6x6, 9216 -> 768), with a learned alpha (mmseg_vpt/models/sidetune.py).
#
# Our defaults, not the public VPT code's: alpha starts at 1 (the linear
# probe exactly) and is not squashed, and the side network starts random.
# The public code starts alpha at sigmoid(0) = 0.5 and the side network
# from torchvision's ImageNet AlexNet: alpha_form='sigmoid', alpha_init=0.5
# and side=dict(init_cfg=dict(type='Pretrained', checkpoint=
# 'pretrain/alexnet-owt-7be5be79.pth')) (torchvision's file; its
# classifier is ignored).
# Learning rate: tools/vtab_sweep.py --method sidetune searches
# mmseg_vpt.vtab.table.FULL_FT_LRS (our default: a side network trained
# from scratch diverges at the prompt grid's rates); base_lr is its middle.
_base_ = ['./vit-b16_linear.py']
base_lr = 0.001
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.SidetuneBackbone',
        # the frozen ViT-B/16 of vit-b16_linear.py, with its Pretrained
        # init_cfg (model.backbone.init_cfg.checkpoint=PATH also sets it)
        backbone={{_base_.model.backbone}},
        side=dict(
            type='SideCNN',
            channels=(64, 192, 384, 256, 256),
            kernel_sizes=(11, 5, 3, 3, 3),
            strides=(4, 1, 1, 1, 1),
            paddings=(2, 2, 1, 1, 1),
            pool_after=(0, 1, 4)),
        side_pool=6,
        alpha_init=1.0,
        alpha_form='linear',
        # the [CLS] head never reads the patch map
        blend_patch_map=False))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
