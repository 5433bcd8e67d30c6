# The synthetic ADE20K-layout dataset written by
#   python tools/dataset_converters/make_synthetic_ade20k.py \
#       data/synthetic_ade20k
# (128x128 images, 8 classes in use), read exactly like the real one. The
# pipeline is datasets/ade20k.py's scaled down by 4
# (64x64 crops, 512x128 instead of 2048x512) minus PhotoMetricDistortion.
_base_ = ['./ade20k.py']
data_root = 'data/synthetic_ade20k/ADEChallengeData2016'
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(512, 128),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    # no PhotoMetricDistortion: the synthetic classes are told apart by
    # colour, which its hue/saturation jitter would blur
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
