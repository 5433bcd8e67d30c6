# VPT-deep (10 prompts per block) on a Swin-T (window 7, 224 px,
# ImageNet-1k) with UperNet: the small variant for quick experiments.
# Otherwise as upernet_swin_vpt_ade20k.py.
_base_ = ['./upernet_swin_vpt_ade20k.py']

model = dict(
    backbone=dict(
        pretrain_img_size=224,
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        init_cfg=dict(checkpoint='pretrain/swin_tiny_patch4_window7_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
