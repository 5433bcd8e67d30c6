# VPT for ConvNets on UperNet ResNet-50: the input image is framed by a
# learnable border of 32 pixels (512x512 crops become 576x576) and the
# ImageNet-1k ResNet-50 (mmseg's V1c stem and weights) stays frozen, its
# BatchNorm in eval mode; only the border and the UperNet / FCN heads train.
# Each output map is cropped back to the part covering the image: with a
# border of 32 px (the ResNet's total stride) the maps are exactly the
# un-padded image's (128, 64, 32, 16 for 512 px).
# Prompt size: 32 px is our default (exact crops at every stage); the VPT
# paper pads learnable pixels around the image for ConvNeXt-B and
# ResNet-50 in classification only, and the pad sizes it used are not
# stated in the text we could check.
# Otherwise mmseg's upernet_r50_4xb4-160k_ade20k-512x512.py: ADE20K
# 512x512, 160k iterations, batch 16, SGD lr 0.01 with poly decay.
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
        type='VPTResNetV1c',
        prompt_pad=32,
        img_size=crop_size,  # other input sizes resize the border strips
        prompt_init='zero',  # untrained: the zero-padded image exactly
        crop_outputs=True,
        frozen_exclude=['prompt'],
        frozen_eval=True,
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        # frozen and in eval mode: running statistics only, so plain BN
        # (also on CPU processes, where SyncBN cannot run)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnet50_v1c')),
    decode_head=dict(
        type='UPerHead',
        in_channels=[256, 512, 1024, 2048],
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
        in_channels=1024,
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
    test_cfg=dict(mode='whole'))

# mmseg's SGD recipe for the heads; the border at 10x their lr and without
# weight decay (decay would pull it back to the zero frame). This
# project's choice, not the paper's; sweep the 'prompt' lr_mult.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'prompt': dict(lr_mult=10., decay_mult=0.)}))

# 4 GPUs x 4 images = 16 per iteration, as mmseg's recipe
train_dataloader = dict(batch_size=4)
