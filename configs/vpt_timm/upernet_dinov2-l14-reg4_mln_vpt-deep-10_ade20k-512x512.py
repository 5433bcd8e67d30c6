# VPT-deep on DINOv2-L/14 with 4 registers (LVD-142M): 10 prompts before
# each of the 24 blocks, after the class and register tokens; the backbone
# is frozen, prompts + neck + heads train. UperNet + MultiLevelNeck, ADE20K
# 512x512, 160k iterations, 8 GPUs x 2 images (see the base).
# Not a row of the VPT paper (no DINOv2 / UperNet rows there).
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), prompts 10x with no weight decay. This project's choice; sweep
# the 'prompt' lr_mult.
# Normalisation: ImageNet mean / std (the base's), as timm's pretrained
# config of this tag says.
_base_ = ['../_base_/upernet_timm-vit-l_mln_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        model_name='vit_large_patch14_reg4_dinov2.lvd142m',
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        # timm's hub file of the tag; a local file works too, e.g. the
        # official release:
        # checkpoint='pretrain/dinov2_vitl14_reg4_pretrain.pth'
        init_cfg=dict(
            checkpoint='timm://vit_large_patch14_reg4_dinov2.lvd142m')))
