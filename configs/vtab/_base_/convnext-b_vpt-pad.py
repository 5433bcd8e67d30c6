# VTAB-1k, ConvNeXt-B (ImageNet-21k) with VPT for ConvNets: a learnable
# border of prompt_pad pixels around the 224x224 image (the backbone sees
# 234x234), the ConvNeXt frozen in eval mode; the border and a linear head
# train. Pooling as in ConvNeXt's own classifier: the last stage is
# averaged over the whole padded image, then its final norm
# (gap_before_final_norm=True, no neck), so no crop (crop_outputs=False).
# Prompt size: 5 px for every task is our default. The paper's text we
# could check does not state its ConvNet pad sizes; the public reference
# code pads by its prompt-size setting, whose default is 5.
# Backbone: this project's VPTConvNeXt (mmpretrain's ConvNeXt + the
# border), built from mmseg's registry through the scoped type. Protocol
# (data, SGD, schedule, lr scaling) as vit-b16_vpt-deep.py.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.VPTConvNeXt',
        prompt_pad=5,
        img_size=224,
        prompt_init='zero',
        crop_outputs=False,
        frozen_exclude=['prompt'],
        frozen_eval=True,
        arch='base',
        out_indices=(3, ),
        drop_path_rate=0.,
        gap_before_final_norm=True,
        # mmpretrain's convnext-base_3rdparty_in21k (a classifier file:
        # its 'backbone.' tensors are loaded, the head is dropped)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://mmassets.onedl.ai/mmclassification/v0/'
            'convnext/convnext-base_3rdparty_in21k_20220124-13b83eec.pth')),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=100,  # per task in configs/vtab/<task>.py
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
