# VPT-deep on OpenAI CLIP ViT-L/14 (image tower, 224 px): 10 prompts before
# each of the 24 blocks, after the class token; the backbone is frozen,
# prompts + neck + heads train. UperNet + MultiLevelNeck, ADE20K 512x512,
# 160k iterations, 8 GPUs x 2 images (see the base).
# Not a row of the VPT paper (no CLIP / UperNet rows there).
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), prompts 10x with no weight decay. This project's choice; sweep
# the 'prompt' lr_mult.
_base_ = ['../_base_/upernet_timm-vit-l_mln_8xb2-160k_ade20k-512x512.py']

# Normalisation: OpenAI CLIP's mean / std (x 255, RGB), as timm's
# pretrained config of this tag says.
data_preprocessor = dict(
    mean=[0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255],
    std=[0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255])
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='vit_large_patch14_clip_224.openai',
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        # timm's hub file of the tag; a local file works too (timm's
        # layout, or an OpenAI / OpenCLIP state dict with visual.* keys):
        # checkpoint='pretrain/FILE.pth'
        init_cfg=dict(checkpoint='timm://vit_large_patch14_clip_224.openai')))
