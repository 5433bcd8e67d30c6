# The setting shared by the Swin rows in configs/vpt/: UperNet on an
# ImageNet-22k Swin-B (window 12, pretrained at 384 px), ADE20K 512x512
# crops, 160k iterations, batch 16. Each row file changes only what trains
# (backbone prompt_length / prompt_layers / frozen_exclude) and the
# learning rates.
_base_ = [
    './models/upernet_swin_vpt.py', './datasets/ade20k.py',
    './default_runtime.py', './schedules/schedule_160k.py'
]

# Optimizer of mmseg's UperNet-Swin ADE20K configs (full fine-tuning):
# AdamW lr 6e-5, weight decay 0.01 except position tables and norms,
# 1500 linear warm-up iterations, then linear (poly, power 1) decay.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # one log line for all frozen parameters instead of one per parameter
    constructor='FrozenSummaryOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
        by_epoch=False),
]

# 8 GPUs x 2 = 16 images per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
