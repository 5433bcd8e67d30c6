# FGVC with a VPT-deep ViT-B/16 (ImageNet-21k): the shared base of
# configs/fgvc/<dataset>.py, whose few lines set the dataset, its class count
# and prompt length. The other methods' bases in this folder inherit this
# file, as in configs/vtab/_base_/.
#
# Everything but the data is the VTAB-1k base (model, SGD momentum 0.9,
# batch 128 or 64 for >= 100 prompts, 100 epochs with 10 of linear warm-up
# then cosine, lr = base_lr * batch / 256, tuned-only checkpoints), which
# the VPT paper uses for FGVC as well. What differs, from the paper's
# protocol for FGVC (arXiv 2203.12119):
#
# * augmentation: training images are randomly resized and cropped to
#   224x224 and flipped horizontally; test images are resized to 256 on the
#   short side and centre-cropped to 224 (ImageNet normalisation, in the
#   data preprocessor as for VTAB). Note: the public VPT code trains with
#   resize-256 + random 224 crop + flip instead (its RandomResizedCrop line
#   is commented out); change train_pipeline to match it.
# * data: FGVCDataset reads the release layouts under data/fgvc/
#   (docs/vtab_fgvc.md, "FGVC classification").
# * splits: this file is the final run. It trains on trainval (the official
#   training set) and evaluates the official test set once, after the last
#   epoch (the "val" loop reads test; nothing is selected on it). The
#   sweep's grid stage overrides the splits to train -> val (90% / 10% of
#   the training set; Oxford Flowers: its official train / val).
_base_ = ['../../vtab/_base_/vit-b16_vpt-deep.py']
custom_imports = dict(
    imports=['mmseg_vpt', 'mmseg_vpt.fgvc.dataset'],
    allow_failed_imports=False)

data_root = 'data/fgvc'
model = dict(
    backbone=dict(prompt_length=10),  # per dataset in configs/fgvc/*.py
    head=dict(num_classes=200))       # per dataset

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='FGVCDataset',
        name='cub',  # per dataset
        split='trainval',
        data_root=data_root,
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='FGVCDataset',
        name='cub',
        split='test',  # the final evaluation; the sweep's grid uses val
        data_root=data_root,
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='FGVCDataset',
        name='cub',
        split='test',
        data_root=data_root,
        test_mode=True,
        pipeline=test_pipeline))
