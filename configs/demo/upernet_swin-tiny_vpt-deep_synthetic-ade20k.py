# CPU demo: VPT-deep on a tiny Swin with an UperNet head, trained and tested
# on the synthetic ADE20K-layout dataset (see
# setr_vit-tiny_vpt-deep_synthetic-ade20k.py for how to run it and what it
# shows). Same structure as an UperNet Swin-B ADE20K config built on
# configs/_base_/models/upernet_swin_vpt.py, scaled down: width 32, depths
# 2-2-2-2, window 4, 64x64 crops, BN instead of SyncBN, random init.
_base_ = [
    '../_base_/models/upernet_swin_vpt.py',
    '../_base_/datasets/synthetic_ade20k.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_400.py'
]

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        pretrain_img_size=64,
        embed_dims=32,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        drop_path_rate=0.1,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=64,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=norm_cfg))
