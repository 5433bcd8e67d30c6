# VTAB-1k, ResNet-50 (ImageNet-1k, torchvision's weights) with VPT for
# ConvNets: a learnable border of prompt_pad pixels around the 224x224
# image (the backbone sees 234x234), the ResNet frozen with its BatchNorm
# in eval mode; the border and a linear head on the globally pooled last
# stage train. The pooled features cover the whole padded image, so no
# crop (crop_outputs=False).
# Prompt size: 5 px for every task is our default. The paper's text we
# could check does not state its ConvNet pad sizes; the public reference
# code pads by its prompt-size setting, whose default is 5.
# Backbone: this project's VPTResNet (mmseg's ResNet + the border), built
# from mmseg's registry through the scoped type. Protocol (data, SGD,
# schedule, lr scaling) as vit-b16_vpt-deep.py.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.VPTResNet',
        prompt_pad=5,
        img_size=224,
        prompt_init='zero',
        crop_outputs=False,
        frozen_exclude=['prompt'],
        frozen_eval=True,
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch',
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet50')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=100,  # per task in configs/vtab/<task>.py
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
