# VPT-deep on EVA-02-L/14 (masked image modeling on ImageNet-22k, 224 px;
# rotary position embeddings): 10 prompts before each of the 24 blocks,
# after the class token, unrotated; the backbone is frozen, prompts + neck
# + heads train. UperNet + MultiLevelNeck, ADE20K 512x512, 160k
# iterations, 8 GPUs x 2 images (see the base).
# Not a row of the VPT paper (no EVA-02 / UperNet rows there).
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), prompts 10x with no weight decay. This project's choice; sweep
# the 'prompt' lr_mult.
_base_ = ['../_base_/upernet_timm-vit-l_mln_8xb2-160k_ade20k-512x512.py']

# Normalisation: OpenAI CLIP's mean / std (x 255, RGB), as timm's
# pretrained config of this tag says (EVA-02 is trained on CLIP features).
data_preprocessor = dict(
    mean=[0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255],
    std=[0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255])
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='eva02_large_patch14_224.mim_in22k',
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        # timm's hub file of the tag; a local file in timm's layout (or
        # the EVA-02 release) works too: checkpoint='pretrain/FILE.pt'
        init_cfg=dict(checkpoint='timm://eva02_large_patch14_224.mim_in22k')))
