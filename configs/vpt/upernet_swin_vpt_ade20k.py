# UperNet on a prompt-tuned Swin-B (window 12, 384 px, ImageNet-22k):
# VPT-deep with 10 fresh prompts before every one of the 24 blocks; the
# backbone is frozen, prompts and the UperNet/FCN heads train.
# ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# Reference: mmseg's UperNet Swin-B (same backbone and weights, full
# fine-tuning) reaches 50.76 mIoU single-scale / 52.4 multi-scale; the VPT
# paper has no Swin segmentation numbers, so VPT's are this project's to
# measure.
_base_ = ['../_base_/upernet_swin-b_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=10, prompt_layers='deep', frozen_exclude=['prompt']))

# Optimizer: mmseg's UperNet-Swin AdamW (lr 6e-5, used by the heads) with
# prompts at 10x that lr and no weight decay: prompts are few new
# parameters that must move far from their random init, and the frozen
# backbone cannot adapt to them. This project's choice; the VPT paper
# reports no Swin segmentation recipe. Sweep the 'prompt' lr_mult.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'prompt': dict(lr_mult=10., decay_mult=0.),
        }))
