# Paper row "VPT+Bias": VPT-deep with 100 prompts per layer, and the
# backbone's bias terms train too (paper: 44.04 mIoU ss / 45.63 ms). The
# prompt length is not in the paper; its first author gives p=100 for this
# row (VPT-deep: p=10) in github.com/KMnP/vpt/issues/13, which matches the
# paper's 15.79M tunable parameters (0.28M biases + 10 x 0.25M prompts).
# Optimizer: as the VPT-deep row (SGD lr 0.005, head and prompt lr_mult 1;
# biases get the base lr). This project's choice, not a value taken from
# the paper.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=100,
        prompt_layers='deep',
        frozen_exclude=['prompt', 'bias']))
optim_wrapper = dict(
    optimizer=dict(lr=0.005),
    paramwise_cfg=dict(
        custom_keys={
            'head': dict(lr_mult=1.0),
            'prompt': dict(lr_mult=1.0, decay_mult=1.0),
        }))
