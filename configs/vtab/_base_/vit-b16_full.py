# VTAB-1k, ViT-B/16 full fine-tuning (paper row "Full"): no prompts, every
# weight trains. The backbone runs in train mode (dropout/drop-path are 0
# in the base anyway). The prompt grid's learning rates (up to 50) diverge
# here; tools/vtab_sweep.py --method full searches
# mmseg_vpt.vtab.table.FULL_FT_LRS instead (our default, not the paper's).
_base_ = ['./vit-b16_vpt-deep.py']
base_lr = 0.001
model = dict(backbone=dict(prompt_length=0, frozen_exclude=['all']))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
