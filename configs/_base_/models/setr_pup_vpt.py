# SETR-PUP (progressive upsampling head) on a VPT ViT-L/16, ADE20K settings.
# Architecture, heads and test mode follow mmseg 1.x's
# setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py (on models/setr_pup.py);
# the differences are the backbone type, its prompt arguments and
# patch_bias=True (see below).
backbone_norm_cfg = dict(type='LN', eps=1e-6, requires_grad=True)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='VPTVisionTransformer',
        # VPT: defaults to VPT-deep with 10 prompts; configs/vpt/ sets each
        # row of the paper's table
        prompt_length=10,
        prompt_layers='deep',
        prompt_dropout=0.0,
        prompt_init='uniform',
        frozen_exclude=['prompt'],
        frozen_eval=True,
        # ViT-L/16
        img_size=(512, 512),
        patch_size=16,
        in_channels=3,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        out_indices=(9, 14, 19, 23),
        drop_rate=0.,
        norm_cfg=backbone_norm_cfg,
        with_cls_token=True,
        interpolate_mode='bilinear',
        # The original ViT releases (and timm) have a patch-embedding bias.
        # mmseg's default (False) silently drops it in the non-strict load;
        # full fine-tuning can recover from that, a frozen backbone cannot.
        patch_bias=True,
        # ImageNet-21k ViT-L/16 (SETR's jx_vit_large_p16_384) converted with
        # mmseg's tools/model_converters/vit2mmseg.py
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vit_large_p16.pth')),
    decode_head=dict(
        type='SETRUPHead',
        in_channels=1024,
        channels=256,
        in_index=3,
        num_classes=150,
        dropout_ratio=0,
        norm_cfg=norm_cfg,
        num_convs=4,
        up_scale=2,
        kernel_size=3,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=1024,
            channels=256,
            in_index=i,
            num_classes=150,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=2,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
        for i in (0, 1, 2)
    ],
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
