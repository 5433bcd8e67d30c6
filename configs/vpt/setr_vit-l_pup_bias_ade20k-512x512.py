# Paper row "Bias": frozen backbone except its bias terms, plus the heads
# (BitFit-style; paper: 43.40 mIoU ss / 45.33 ms).
# Optimizer: SGD, lr 0.005 for the biases, head lr_mult 10 as in mmseg's
# SETR recipe. This project's choice (same lr as the head-only row), not a
# value taken from the paper.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(backbone=dict(prompt_length=0, frozen_exclude=['bias']))
optim_wrapper = dict(optimizer=dict(lr=0.005))
