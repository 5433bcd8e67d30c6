# Paper row "Head Only": frozen backbone, only the SETR-PUP heads train
# (paper: 35.12 mIoU ss / 37.46 ms).
# Optimizer: SGD, lr 0.005 (larger than full fine-tuning's 0.001, as the
# backbone is frozen), head lr_mult 10 as in mmseg's SETR recipe. This is
# this project's choice, not a value taken from the paper's segmentation
# recipe.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(backbone=dict(prompt_length=0, frozen_exclude=[]))
optim_wrapper = dict(optimizer=dict(lr=0.005))
