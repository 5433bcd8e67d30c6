# Head-only: the Swin-B backbone is frozen, only the UperNet/FCN heads
# train, with mmseg's AdamW recipe.
_base_ = ['../_base_/upernet_swin-b_8xb2-160k_ade20k-512x512.py']

model = dict(backbone=dict(prompt_length=0, frozen_exclude=[]))
