# UperNet (UPerHead + FCNHead auxiliary) on a VPT timm ViT-L, ADE20K
# settings. The neck and heads follow mmseg 1.x's
# _base_/models/upernet_vit-b16_ln_mln.py (mmseg's MultiLevelNeck turns the
# four single-scale ViT outputs into a 4x / 2x / 1x / 0.5x pyramid for
# UperNet), widened to ViT-L (1024 channels). The slide test mode (512
# crops, stride 341) is that of mmseg's MAE-B UperNet and SETR ADE20K
# configs (mmseg's ViT UperNet configs test whole images).
#
# The backbone is this project's VPTTimmViT: any timm VisionTransformer /
# Eva model, built by name, with VPT prompts after its prefix tokens. This
# file defaults to DINOv2-L/14 with 4 registers; the rows in
# configs/vpt_timm/ set model_name, its weights and its normalisation.
# At 512 px a /14 model sees a 37x37 grid (512 is padded to 518 at the
# bottom / right), a /16 model a 32x32 grid; timm fits the position
# embeddings (absolute or rotary) to the grid of each input.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet mean / std, RGB (the rows of CLIP-trained models override it)
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
        type='VPTTimmViT',
        model_name='vit_large_patch14_reg4_dinov2.lvd142m',
        # frozen backbone in eval mode: no drop-path
        timm_kwargs=dict(drop_path_rate=0.),
        # blocks 8, 12, 16 and 24 of 24 (as mmseg's BEiT-L UperNet)
        out_indices=(7, 11, 15, 23),
        out_norm=False,
        output_cls_token=False,
        with_cp=False,
        prompt_length=10,
        prompt_layers='deep',
        prompt_dropout=0.,
        prompt_init='uniform',
        frozen_exclude=['prompt'],
        frozen_eval=True,
        # 'timm://NAME': the file of timm's hub tag NAME, downloaded once
        # into the Hugging Face cache. A local file works too (timm's
        # layout, the official DINOv2 release, MAE's {'model': ...}, MoCo
        # v3's module.base_encoder.): checkpoint='pretrain/FILE.pth'.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='timm://vit_large_patch14_reg4_dinov2.lvd142m')),
    neck=dict(
        type='MultiLevelNeck',
        in_channels=[1024, 1024, 1024, 1024],
        out_channels=1024,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(
        type='UPerHead',
        in_channels=[1024, 1024, 1024, 1024],
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
        # the 0.5x level (block 24), as mmseg's ViT MLN UperNet
        in_index=3,
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
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
