# VPT-deep on DINOv3 ViT-7B/16 (LVD-1689M; 6.7B parameters, 40 blocks of
# width 4096, SwiGLU, 4 register tokens, rotary position embeddings): 10
# prompts before each of the 40 blocks, after the class and register tokens,
# unrotated; the backbone is frozen, prompts + neck + heads train. UperNet +
# MultiLevelNeck, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images (see
# the base).
# Not a row of the VPT paper (no DINOv3 / UperNet rows there).
# Memory: the backbone is built on the meta device and its weights go from
# the file straight into bfloat16 (meta_init, frozen_dtype: 13.4 GB, never a
# float32 copy); each block is checkpointed while training (with_cp), so
# the backward keeps only the blocks' inputs.
# Outputs: blocks 10, 20, 30 and 40, the four even intervals that the DINOv3
# release's segmentation evaluation takes from a 40-block ViT
# (dinov3/eval/segmentation/models/__init__.py, FOUR_EVEN_INTERVALS:
# [9, 19, 29, 39]). The neck maps them from 4096 to the 1024 channels of
# the ViT-L rows, whose heads are unchanged.
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), prompts 10x with no weight decay: the rule of the ViT-L rows
# (upernet_dinov3-l16_mln_vpt-deep-10_ade20k-512x512.py). The DINOv3
# release's own frozen-backbone ADE20K recipe trains a linear head (BN and
# a 1x1 conv on the last block) with AdamW lr 1e-3, weight decay 1e-3, 40k
# iterations (dinov3/eval/segmentation/configs/
# config-ade20k-linear-training.yaml); it has no UperNet or prompt recipe.
# This project's choice; sweep the 'prompt' lr_mult.
# Normalisation: ImageNet mean / std (the base's), as timm's pretrained
# config of this tag says.
_base_ = ['../_base_/upernet_timm-vit-l_mln_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        model_name='vit_7b_patch16_dinov3.lvd1689m',
        out_indices=(9, 19, 29, 39),
        with_cp=True,
        frozen_dtype='bf16',
        meta_init=True,
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        # timm's hub file of the tag; a local file in timm's layout works
        # too: checkpoint='pretrain/FILE.pth'
        init_cfg=dict(checkpoint='timm://vit_7b_patch16_dinov3.lvd1689m')),
    neck=dict(in_channels=[4096, 4096, 4096, 4096]))
