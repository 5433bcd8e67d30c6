# FGVC, ViT-B/16 Partial-1 (paper row "Partial-1"): no prompts; the last
# layer and the final norm train with the head, as the VTAB-1k base does.
_base_ = ['./vit-b16_linear.py']
base_lr = 0.001
model = dict(backbone=dict(partial_k=1))
optim_wrapper = dict(optimizer=dict(lr=base_lr))
