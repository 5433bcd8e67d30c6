# The setting shared by every row of the VPT paper's segmentation table
# (Jia et al., ECCV 2022, arXiv 2203.12119): SETR-PUP on an ImageNet-21k
# ViT-L/16, ADE20K 512x512 crops, 160k iterations, batch 16.
# configs/vpt/ has one file per row; each changes only what trains
# (backbone prompt_length / frozen_exclude) and the learning rates.
_base_ = [
    './models/setr_pup_vpt.py', './datasets/ade20k.py',
    './default_runtime.py', './schedules/schedule_160k.py'
]

# Optimizer of mmseg's SETR-PUP ADE20K config (full fine-tuning): SGD,
# lr 0.001, momentum 0.9, no weight decay, 10x lr for the heads, poly decay
# (schedule_160k). Rows that freeze the backbone override lr / multipliers.
optimizer = dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))

# 8 GPUs x 2 = 16 images per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
