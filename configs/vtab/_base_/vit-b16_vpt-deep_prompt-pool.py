# VTAB-1k, ViT-B/16 VPT-deep, classifying the mean of the last layer's prompt
# (normed) tokens instead of the [CLS] token: the paper's output ablation.
# VisionTransformerClsHead reads the vector the backbone puts beside the
# patch map (cls_feature).
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(cls_feature='prompt-pool'))
