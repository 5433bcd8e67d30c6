# The setting shared by the rows in configs/vpt_timm/: UperNet with mmseg's
# MultiLevelNeck on a frozen timm ViT-L (DINOv2, DINOv3, EVA-02, CLIP, MAE;
# out_indices 7 / 11 / 15 / 23), ADE20K 512x512 crops, 160k iterations,
# batch 16, slide test (512 crops, stride 341). Each row file sets the timm
# model, its weights and normalisation, and what trains (backbone
# prompt_length / frozen_exclude).
_base_ = [
    './models/upernet_timm_vit_mln.py', './datasets/ade20k.py',
    './default_runtime.py', './schedules/schedule_160k.py'
]

# Optimizer: the AdamW recipe of mmseg's UperNet ADE20K configs (Swin, ViT
# MLN; full fine-tuning there): lr 6e-5, weight decay 0.01, 1500 linear
# warm-up iterations, then linear (poly, power 1) decay. Here that lr goes
# to the neck and heads; prompts get 10x it and no weight decay, as in this
# project's Swin UperNet VPT rows. This project's choice: the VPT paper has
# no UperNet or timm-backbone rows. Sweep the 'prompt' lr_mult.
# (Position embeddings, class / register tokens and norms get no weight
# decay, as in mmseg's ViT recipe; they are frozen in these rows anyway.)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # one log line for all frozen parameters instead of one per parameter
    constructor='FrozenSummaryOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'prompt': dict(lr_mult=10., decay_mult=0.),
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'reg_token': dict(decay_mult=0.),
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
