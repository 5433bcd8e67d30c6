# VPT for ConvNets on UperNet ConvNeXt-B: the input image is framed by a
# learnable border of 32 pixels (512x512 crops become 576x576) and the
# ImageNet-21k ConvNeXt-B (the paper's ConvNet backbone; mmpretrain's
# ConvNeXt) stays frozen in eval mode (drop-path off); only the border and
# the UperNet / FCN heads train. Each output map is cropped back to the
# image: with a 32 px border (the total stride) exactly.
# Prompt size: 32 px is our default (exact crops at every stage); the VPT
# paper pads learnable pixels around the image for ConvNeXt-B and
# ResNet-50 in classification only, and the pad sizes it used are not
# stated in the text we could check.
# ConvNeXt's output norms norm0-norm2 are not in the classification
# release: they keep their identity initialisation (frozen).
# Otherwise mmseg's convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py
# (AdamW lr 1e-4, 1500 warm-up iterations then linear decay, sliding-window
# test, batch 16), without its layer-wise lr decay (the backbone is frozen)
# and in fp32 (add --amp for mixed precision).
_base_ = [
    '../_base_/datasets/ade20k.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py'
]
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='VPTConvNeXt',
        prompt_pad=32,
        img_size=crop_size,  # the sliding window's crops: used as stored
        prompt_init='zero',  # untrained: the zero-padded image exactly
        crop_outputs=True,
        frozen_exclude=['prompt'],
        frozen_eval=True,
        arch='base',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,  # off while frozen (frozen_eval)
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        # mmpretrain's ConvNeXt-B ImageNet-21k (convnext-base_3rdparty_in21k
        # in its model zoo; 'backbone.' keys, the head is dropped)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://mmassets.onedl.ai/mmclassification/v0/'
            'convnext/convnext-base_3rdparty_in21k_20220124-13b83eec.pth')),
    decode_head=dict(
        type='UPerHead',
        in_channels=[128, 256, 512, 1024],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=512,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# mmseg's ConvNeXt AdamW for the heads; the border at 10x their lr and
# without weight decay (decay would pull it back to the zero frame). This
# project's choice, not the paper's; sweep the 'prompt' lr_mult.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # one log line for all frozen parameters instead of one per parameter
    constructor='FrozenSummaryOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={'prompt': dict(lr_mult=10., decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
        by_epoch=False),
]

# 8 GPUs x 2 images = 16 per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
