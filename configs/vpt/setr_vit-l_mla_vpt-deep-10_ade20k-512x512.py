# VPT-deep (10 prompts per layer) with the SETR-MLA head instead of PUP.
# Not a row of the paper's table (the paper uses SETR-PUP only); same
# data, schedule and optimizer as the PUP VPT-deep row.
# Optimizer: SGD lr 0.005 shared by prompts, neck and heads (mmseg's
# SETR-MLA recipe uses lr 0.001 with head lr_mult 10 for full fine-tuning).
# This project's choice, carried over from the PUP VPT-deep row. Note that
# custom key 'head' does not match the MLA neck ('neck.*'), which gets the
# base lr either way.
_base_ = [
    '../_base_/models/setr_mla_vpt.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]

model = dict(
    backbone=dict(
        prompt_length=10, prompt_layers='deep', frozen_exclude=['prompt']))
optimizer = dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    paramwise_cfg=dict(
        custom_keys={
            'head': dict(lr_mult=1.0),
            'prompt': dict(lr_mult=1.0, decay_mult=1.0),
        }))

# 8 GPUs x 2 = 16 images per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
