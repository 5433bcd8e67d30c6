# Multi-task serving demo, task 1 of 3 (docs/serving.md, "Three tasks on
# one backbone, on the CPU"): the CPU demo's SETR-PUP ViT with VPT-deep (10 prompts),
# but on base weights from a file, so that tasks can share the backbone:
#   python tools/model_converters/random_base.py \
#       configs/demo/serving/setr_vit-tiny_vpt-deep-10_base.py \
#       work_dirs/serving_demo/base.pth
_base_ = ['../setr_vit-tiny_vpt-deep_synthetic-ade20k.py']
model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint='work_dirs/serving_demo/base.pth')))
