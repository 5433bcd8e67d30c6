# VTAB-1k clevr_distance (Structured, 6 classes)
# ViT-B/16 vpt-deep: 200 prompts, batch 64.
# Written by mmseg_vpt.vtab.tasks.render_task_config; README section
# "VTAB-1k classification" explains the other methods.
_base_ = ['./_base_/vit-b16_vpt-deep.py']
vtab_task = 'clevr_distance'
model = dict(backbone=dict(prompt_length=200), head=dict(num_classes=6))
train_dataloader = dict(batch_size=64, dataset=dict(task=vtab_task))
val_dataloader = dict(dataset=dict(task=vtab_task))
test_dataloader = dict(dataset=dict(task=vtab_task))
