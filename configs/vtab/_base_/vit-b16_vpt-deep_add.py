# VTAB-1k, ViT-B/16: the paper's "Add" prompt location (its Fig. 5): one
# learnable vector per patch position and layer, added to the patch tokens
# instead of prepended, so the sequence keeps its 197 tokens. prompt_length
# is the 14x14 = 196 patches of a 224 px image; the per-task configs keep it.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(backbone=dict(prompt_location='add', prompt_length=196))
