# Bias tuning: the backbone's bias terms and the heads train, with mmseg's
# AdamW recipe.
_base_ = ['../_base_/upernet_swin-b_8xb2-160k_ade20k-512x512.py']

# '.bias' (not 'bias'): the bias terms of linear and norm layers, without
# the relative position bias tables, which are position embeddings.
model = dict(backbone=dict(prompt_length=0, frozen_exclude=['.bias']))
