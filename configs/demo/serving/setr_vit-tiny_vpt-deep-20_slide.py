# Multi-task serving demo, task 3 of 3: the same frozen backbone, VPT-deep
# with 20 prompts, tested with sliding 64x64 windows (stride 48).
_base_ = ['./setr_vit-tiny_vpt-deep-10_base.py']
model = dict(
    backbone=dict(prompt_length=20),
    test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(48, 48)))
