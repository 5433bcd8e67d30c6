# VTAB-1k, Swin-B VPT-deep (ImageNet-21k, 224 px, window 7; the paper's
# Swin-B table): this project's VPTSwinTransformer (mmseg's Swin + prompts)
# through mmpretrain's ImageClassifier. The last stage's normed image tokens
# (prompts stripped) are averaged by TokenPooling and classified by a
# LinearClsHead, as in Swin's own classifier. (mmpretrain's
# GlobalAveragePooling would do the same but refuses the list that mmseg's
# Swin returns.)
# Prompt length: 10 per block for every task (our default; the paper's
# per-task Swin lengths are not used here). Protocol as vit-b16_vpt-deep.py.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.VPTSwinTransformer',
        prompt_length=10,
        prompt_layers='deep',
        prompt_dropout=0.0,
        prompt_init='uniform',
        frozen_exclude=['prompt'],
        frozen_eval=True,
        # Swin-B, window 7, 224 px
        pretrain_img_size=224,
        in_channels=3,
        embed_dims=128,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        strides=(4, 2, 2, 2),
        out_indices=(3, ),
        qkv_bias=True,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='LN'),
        # swin_base_patch4_window7_224_22k converted with
        # tools/model_converters/convert_weights.py
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrain/swin-b_w7_224_in22k.pth')),
    neck=dict(type='mmseg.TokenPooling', pool='mean'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
