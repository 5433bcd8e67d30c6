# CPU demo: VPT-deep on a tiny ViT with a SETR-PUP head, trained and tested
# on the synthetic ADE20K-layout dataset. No download, no GPU; about 1.5 min
# on 2 CPU cores.
#
#   python tools/dataset_converters/make_synthetic_ade20k.py \
#       data/synthetic_ade20k
#   python tools/train.py \
#       configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py
#
# Same structure as configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py
# (VPTVisionTransformer with 10 prompts in every layer, frozen backbone,
# SETR-PUP decode + auxiliary heads, ADE20KDataset with reduce_zero_label,
# IoUMetric, SGD + poly), scaled down: 4 layers of width 96, 8x8 patches,
# 64x64 crops, BN instead of SyncBN, 400 iterations of batch 8.
#
# There are no pretrained weights (init_cfg=None): the backbone is randomly
# initialised, then frozen except for the prompts. So the demo shows the
# pipeline working, not VPT's benefit over other tuning methods: a frozen
# random ViT still passes patch colour and texture through (random patch
# projection plus residual layers), which is what the synthetic classes are
# made of, and the heads learn to segment from that.
_base_ = [
    '../_base_/models/setr_pup_vpt.py',
    '../_base_/datasets/synthetic_ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_400.py'
]

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        img_size=(64, 64),
        patch_size=8,
        embed_dims=96,
        num_layers=4,
        num_heads=4,
        out_indices=(0, 1, 2, 3),
        init_cfg=None),
    # 8x8 tokens, three x2 upsamplings -> 64x64
    decode_head=dict(
        in_channels=96, channels=64, num_convs=3, norm_cfg=norm_cfg),
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=96,
            channels=32,
            in_index=i,
            num_classes=150,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=2,
            up_scale=2,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
        for i in (1, 2)
    ],
    test_cfg=dict(_delete_=True, mode='whole'))
