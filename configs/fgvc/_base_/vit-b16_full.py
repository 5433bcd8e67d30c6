# FGVC, ViT-B/16 full fine-tuning (paper row "Full"): no prompts, every
# weight trains. tools/fgvc_sweep.py --method full searches
# mmseg_vpt.vtab.table.FULL_FT_LRS (as for VTAB).
_base_ = ['./vit-b16_vpt-deep.py']
base_lr = 0.001
model = dict(backbone=dict(prompt_length=0, frozen_exclude=['all']))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
