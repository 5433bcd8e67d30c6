# 400-iteration schedule for the CPU demos: SGD as in the VPT rows (heads
# and prompts share one lr; lr_mult for prompts exposed), with a larger lr
# for the short run, poly decay, one validation and checkpoint at the end.
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    # one log line for all frozen parameters instead of one per parameter
    constructor='FrozenSummaryOptimWrapperConstructor',
    optimizer=optimizer,
    clip_grad=None,
    paramwise_cfg=dict(
        custom_keys={
            'head': dict(lr_mult=1.0),
            'prompt': dict(lr_mult=1.0, decay_mult=1.0),
        }))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=400,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=400)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook plus exact, atomic resume
    # (mmseg_vpt/engine/resume.py)
    checkpoint=dict(
        type='ResumableCheckpointHook', by_epoch=False, interval=400),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
