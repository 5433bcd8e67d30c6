# VTAB-1k svhn (Natural, 10 classes)
# ViT-B/16 vpt-deep: 50 prompts, batch 128.
# Written by mmseg_vpt.vtab.tasks.render_task_config; README section
# "VTAB-1k classification" explains the other methods.
_base_ = ['./_base_/vit-b16_vpt-deep.py']
vtab_task = 'svhn'
model = dict(backbone=dict(prompt_length=50), head=dict(num_classes=10))
train_dataloader = dict(batch_size=128, dataset=dict(task=vtab_task))
val_dataloader = dict(dataset=dict(task=vtab_task))
test_dataloader = dict(dataset=dict(task=vtab_task))
