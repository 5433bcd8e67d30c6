# VTAB-1k, ViT-B/16 VPT-deep with a mean-pooling head instead of the
# paper's [CLS] head: the "Image-pool" choice of the paper's output
# ablation (the backbone's cls_feature='image-pool' with the [CLS] head
# computes the same vector). TokenPooling averages the
# patch tokens of the last layer (after the final norm; prompts and class
# token excluded) and a LinearClsHead classifies them.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    neck=dict(type='mmseg.TokenPooling', pool='mean'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=100,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))
