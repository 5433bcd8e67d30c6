# VTAB-1k, ViT-B/16: the paper's "Prepend-pixel" location (its Fig. 5): the
# prompts are learnable 16x16 image patches, embedded by the frozen patch
# embedding and prepended to the first layer's sequence.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(prompt_location='prepend-pixel', prompt_layers='shallow'))
