# FGVC CUB-200-2011 (200 classes; paper splits 5394/600/5794)
# ViT-B/16 vpt-deep: 10 prompts, batch 128.
# Written by mmseg_vpt.fgvc.tasks.render_task_config; README section
# "FGVC classification" explains the other methods.
_base_ = ['./_base_/vit-b16_vpt-deep.py']
fgvc_dataset = 'cub'
model = dict(backbone=dict(prompt_length=10), head=dict(num_classes=200))
train_dataloader = dict(batch_size=128, dataset=dict(name=fgvc_dataset))
val_dataloader = dict(dataset=dict(name=fgvc_dataset))
test_dataloader = dict(dataset=dict(name=fgvc_dataset))
