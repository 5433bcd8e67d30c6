# Multi-task serving demo, task 2 of 3: the same frozen backbone, VPT-shallow
# with 5 prompts and a one-layer FCN head on the last layer's features.
_base_ = ['./setr_vit-tiny_vpt-deep-10_base.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(prompt_length=5, prompt_layers='shallow'),
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=96,
        channels=64,
        in_index=3,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
