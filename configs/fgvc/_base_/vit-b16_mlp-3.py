# FGVC, ViT-B/16 MLP-3 (paper row "MLP-3"): the frozen backbone of
# "Linear" with the VTAB-1k base's 3-layer perceptron head on the [CLS]
# token (two hidden layers of 768 with ReLU, BatchNorm1d and dropout 0.1,
# then the classifier; configs/vtab/_base_/vit-b16_mlp-3.py).
_base_ = ['./vit-b16_linear.py']
custom_imports = dict(
    imports=['mmseg_vpt', 'mmseg_vpt.fgvc.dataset', 'mmseg_vpt.models.heads'],
    allow_failed_imports=False)
model = dict(
    head=dict(
        _delete_=True,
        type='MLPClsHead',
        num_classes=200,  # per dataset
        in_channels=768,
        num_layers=3,
        act_cfg=dict(type='ReLU'),
        norm_cfg=dict(type='BN1d'),
        dropout_ratio=0.1,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
