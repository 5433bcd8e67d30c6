# VTAB-1k, ViT-B/16: the paper's "Concat-channel" location (its Fig. 5): a
# learnable image channel joined to the input (prompt_length channels), with
# new patch-embedding weights for it (zero-initialised, trained).
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(prompt_location='concat-channel', prompt_length=1,
                  prompt_layers='shallow'))
