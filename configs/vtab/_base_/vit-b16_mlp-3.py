# VTAB-1k, ViT-B/16 MLP-3 (paper row "MLP-3"): the frozen backbone of
# "Linear" with a 3-layer perceptron on the [CLS] token instead of a linear
# head (two hidden layers of 768, then the classifier). ReLU, BatchNorm1d
# and dropout 0.1 after each hidden layer, as the public VPT code's head.
_base_ = ['./vit-b16_linear.py']
custom_imports = dict(
    imports=['mmseg_vpt', 'mmseg_vpt.vtab.dataset', 'mmseg_vpt.models.heads'],
    allow_failed_imports=False)
model = dict(
    head=dict(
        _delete_=True,
        type='MLPClsHead',
        num_classes=100,  # per task
        in_channels=768,
        num_layers=3,
        act_cfg=dict(type='ReLU'),
        norm_cfg=dict(type='BN1d'),
        dropout_ratio=0.1,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
