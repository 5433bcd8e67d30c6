# Paper row "Full": full fine-tuning (paper: 48.31 mIoU ss / 50.07 ms).
# No prompts; every parameter trains; backbone in train mode.
# Optimizer: mmseg's SETR-PUP ADE20K recipe, unchanged (in the base):
# SGD lr 0.001, momentum 0.9, weight decay 0, head lr_mult 10, poly.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=0, frozen_exclude=['all'], frozen_eval=False))
