# VTAB-1k with a VPT-deep ViT-B/16 (ImageNet-21k): the shared base of
# configs/vtab/<task>.py, whose few lines set the task, its class count and
# prompt length. The other methods' bases in this folder inherit this file.
#
# Classification goes through mmpretrain's ImageClassifier; the backbone is
# this project's VPTVisionTransformer (mmseg's ViT + prompts), built from
# mmseg's registry through the scoped type 'mmseg.VPTVisionTransformer'.
# With output_cls_token=True its output is ([patch_map, cls_token],) and
# mmpretrain's VisionTransformerClsHead reads the class token as it is.
#
# The paper's protocol (VPT, arXiv 2203.12119, VTAB-1k): images resized to
# 224x224, ImageNet normalisation, no augmentation; SGD with momentum 0.9,
# batch 128 (64 for prompt length >= 100), 100 epochs, 10 linear warm-up
# epochs then cosine decay, lr = base_lr * batch / 256 (auto_scale_lr
# below), base lr and weight decay chosen per task by a grid search on
# train800 -> val200 (tools/vtab_sweep.py). Trainable: prompts and head;
# the class token and every backbone weight stay frozen.
#
# Splits: this file is the paper's final run. It trains on train800val200
# and evaluates the test split once, after the last epoch (the "val" loop
# below reads test.txt; nothing is selected on it). The sweep's grid stage
# overrides the splits to train800 -> val200.
custom_imports = dict(
    imports=['mmseg_vpt', 'mmseg_vpt.vtab.dataset'],
    allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = 'data/vtab-1k'
# lr = base_lr * batch / 256. These defaults are placeholders (the middle of
# the paper's grid): the paper picks lr and weight decay per task, which
# tools/vtab_sweep.py does.
base_lr = 0.25
weight_decay = 0.001
max_epochs = 100
warmup_epochs = 10

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmseg.VPTVisionTransformer',
        prompt_length=10,  # per task in configs/vtab/<task>.py
        prompt_layers='deep',
        prompt_dropout=0.0,
        prompt_init='uniform',
        # only the prompts train in the backbone (not the class token)
        frozen_exclude=['prompt'],
        frozen_eval=True,
        # ViT-B/16
        img_size=(224, 224),
        patch_size=16,
        in_channels=3,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.,
        out_indices=-1,
        with_cls_token=True,
        output_cls_token=True,
        final_norm=True,  # the [CLS] token is read after the final norm
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        # the original ViT releases have a patch-embedding bias (mmseg's
        # default False would silently drop it in the non-strict load)
        patch_bias=True,
        interpolate_mode='bicubic',
        # ViT-B/16 ImageNet-21k converted with
        # tools/model_converters/convert_weights.py (docs/vtab_fgvc.md,
        # "VTAB-1k classification")
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vit-b16_in21k.pth')),
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,  # per task in configs/vtab/<task>.py
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )),
    data_preprocessor=dict(
        # ImageNet normalisation, RGB
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True))

# Resize to 224x224 (aspect ratio not kept), no augmentation.
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False,
         interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,  # 64 for prompt length >= 100 (in the task file)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='VTABDataset',
        task='cifar100',  # per task
        split='train800val200',
        data_root=data_root,
        pipeline=pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='VTABDataset',
        task='cifar100',
        split='test',  # the final evaluation; the sweep's grid uses val200
        data_root=data_root,
        test_mode=True,
        pipeline=pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='VTABDataset',
        task='cifar100',
        split='test',
        data_root=data_root,
        test_mode=True,
        pipeline=pipeline))
test_evaluator = dict(type='Accuracy', topk=(1, ))

optim_wrapper = dict(
    type='OptimWrapper',
    # one log line for all frozen parameters (mmseg's registry: this
    # config's default scope is mmpretrain)
    constructor='mmseg.FrozenSummaryOptimWrapperConstructor',
    optimizer=dict(
        type='SGD', lr=base_lr, momentum=0.9, weight_decay=weight_decay))
# lr = base_lr * (total batch) / 256, as in the paper
auto_scale_lr = dict(base_batch_size=256, enable=True)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs,
                 val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # the last epoch's weights (and one every 10 epochs for --resume)
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
# TrainableParamsHook logs total / trainable / prompt parameter counts at
# start; TunedCheckpointHook saves only the tuned tensors (prompts, head)
# when the backbone is frozen and loads them on top of the Pretrained base
# weights (tools/test.py, --resume). Both live in mmseg's registry.
custom_hooks = [
    dict(type='mmseg.TrainableParamsHook'),
    dict(type='mmseg.TunedCheckpointHook', check_base_hash=True),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches this to gloo when distributed without a GPU
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
