"""The frozen backbone sharded across processes by torch's FSDP2
(``tools/dist_train.sh CONFIG 2 --fsdp``, :class:`VPTFullyShardedWrapper`),
on CPU processes talking over gloo.

A small timm ViT (blocks checkpointed, ``with_cp``) and a small Swin (slide
validation, which gathers the units), each with VPT-deep prompts and base
weights, train through ``tools/train.py`` in two processes with ``--fsdp``
and in one process with the same global batch (2 x 2 and 4 images). The
pipeline has no random augmentation, the heads normalise per image (GN) and
the loss averages over all pixels, so the two see the same gradients up to
rounding if, and only if, the sharded run averages its processes' gradients
(torch issue #162338 reports FSDP2 on gloo summing them; here FSDP reduces
no gradient and the wrapper averages the trainable ones). Then:

* after 3 steps the prompts and heads of the two runs agree within 1e-5 of
  their scale (summing instead of averaging is off by about 1e-2);
* each process holds at most 0.55x of the frozen parameter bytes (the
  wrapper's log line, counted from each process's parameter storage);
* the task files are the same format as the one-process run's (the same
  tensors, plain, the same metadata), and mmseg's ``init_model`` loads
  them: its logits are those of the model the project's loader builds, its
  frozen backbone the base file's;
* a sharded run SIGKILLed between checkpoints and resumed with ``--resume``
  ends bit-identical to the uninterrupted sharded run.
"""
import re
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from torch.distributed.tensor import DTensor

from mmseg_vpt.checkpoint import TUNED_META_KEY, load_tuned_checkpoint
from mmseg_vpt.checkpoint.loading import model_from_config
from mmseg_vpt.checkpoint.synthetic import random_base_state
from mmseg_vpt.engine import VPTFullyShardedWrapper, enable_fsdp
from mmseg_vpt.engine.fsdp import require_base_weights

from .test_exact_resume import (assert_same_training_state, last_saved_iter,
                                logged_iter, start_and_kill)
from .tools_helpers import (PYTHON, REPO, free_port, read_checkpoint, run,
                            run_fails, synthetic_workspace)
from .vpt_helpers import make_batch

ITERS = 3
GLOBAL_BATCH = 4
RELATIVE_TOLERANCE = 1e-5
MAX_FROZEN_SHARE = 0.55

# A tiny segmentor on the synthetic ADE20K-layout data, deterministic
# given its data: fixed-size resize only, no dropout or drop-path, GN heads
# (per image, unlike BN, which would see 2 images per process against 4),
# a loss averaged over all pixels (ignored ones count as zero), so that the
# mean of two processes' losses is the loss of their four images.
CONFIG = """
_base_ = [
    '{repo}/configs/_base_/datasets/synthetic_ade20k.py',
    '{repo}/configs/_base_/default_runtime.py',
    '{repo}/configs/_base_/schedules/schedule_400.py',
]
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline=pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(pipeline=pipeline))
test_dataloader = val_dataloader
norm_cfg = dict(type='GN', num_groups=4, requires_grad=True)
loss = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
            avg_non_ignore=False)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
        seg_pad_val=255, size=(64, 64)),
    backbone={backbone},
    decode_head={decode_head},
    auxiliary_head=dict(
        type='FCNHead', in_channels={aux_channels}, in_index={aux_index},
        channels=16, num_convs=1, concat_input=False, dropout_ratio=0.,
        num_classes=150, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(loss, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='{test_mode}', crop_size=(48, 48), stride=(32, 32)))
train_cfg = dict(max_iters={iters}, val_interval={iters})
# SGD at a constant rate, prompts at 50 (the top of VPT's grid): every step
# moves prompts and heads well beyond the tolerance, so gradients summed
# over the processes instead of averaged could not pass
param_scheduler = []
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(
    prompt=dict(lr_mult=1000.0, decay_mult=1.0))))
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
"""

class Var(str):
    """A name of the config's own variables, written unquoted."""

    def __repr__(self) -> str:
        return str(self)


PROMPTS = dict(prompt_length=4, prompt_layers='deep', prompt_dropout=0.,
               frozen_exclude=['prompt'])

VIT = dict(
    backbone=dict(
        type='VPTTimmViT', model_name='vit_small_patch16_224',
        timm_kwargs=dict(depth=4, embed_dim=64, num_heads=4, img_size=32,
                         patch_size=8, drop_path_rate=0.),
        out_indices=(1, 3), with_cp=True, **PROMPTS),
    decode_head=dict(
        type='FCNHead', in_channels=64, in_index=1, channels=16, num_convs=1,
        concat_input=False, dropout_ratio=0., num_classes=150,
        norm_cfg=Var('norm_cfg'), align_corners=False,
        loss_decode=Var('loss')),
    aux_channels=64, aux_index=0, test_mode='whole')

SWIN = dict(
    backbone=dict(
        type='VPTSwinTransformer', pretrain_img_size=64, embed_dims=32,
        depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4,
        drop_path_rate=0., out_indices=(0, 1, 2, 3), **PROMPTS),
    decode_head=dict(
        type='UPerHead', in_channels=[32, 64, 128, 256],
        in_index=[0, 1, 2, 3], pool_scales=(1, 2), channels=16,
        dropout_ratio=0., num_classes=150, norm_cfg=Var('norm_cfg'),
        align_corners=False, loss_decode=Var('loss')),
    # slide inference: the sharded run gathers its units for each step
    aux_channels=128, aux_index=2, test_mode='slide')


def config_text(spec: dict, base: Path, batch: int) -> str:
    backbone = dict(spec['backbone'], init_cfg=dict(
        type='Pretrained', checkpoint=str(base)))
    return CONFIG.format(
        repo=REPO, batch=batch, iters=ITERS, backbone=repr(backbone),
        decode_head=repr(spec['decode_head']),
        aux_channels=spec['aux_channels'], aux_index=spec['aux_index'],
        test_mode=spec['test_mode'])


def write_configs(root: Path, name: str, spec: dict) -> Dict[str, Path]:
    """The one-process config (batch 4), the two-process one (2 each) and
    the random base weights both load."""
    base = root / f'{name}_base.pth'
    paths = {}
    for kind, batch in (('single', GLOBAL_BATCH),
                        ('sharded', GLOBAL_BATCH // 2)):
        paths[kind] = root / f'{name}_{kind}.py'
        paths[kind].write_text(config_text(spec, base, batch))
    cfg = Config.fromfile(str(paths['single']))
    state = random_base_state(cfg, seed=1)
    # VPTTimmViT reads timm's layout: the timm model's own state dict
    torch.save({k.removeprefix('timm_model.'): v for k, v in state.items()},
               base)
    return paths


def dist_train(config: Path, work: Path, *extra: str) -> List:
    return ['bash', REPO / 'tools/dist_train.sh', config, '2', '--work-dir',
            work, '--fsdp', *extra]


def dist_env() -> dict:
    return {'PORT': str(free_port()), 'PYTHON': PYTHON}


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    return synthetic_workspace(tmp_path_factory, 'fsdp')


def train_pair(workspace: Path, name: str, spec: dict) -> dict:
    """One-process and sharded two-process runs of ``spec``."""
    configs = write_configs(workspace, name, spec)
    single, sharded = workspace / f'{name}_single', workspace / f'{name}_fsdp'
    run([PYTHON, REPO / 'tools/train.py', configs['single'], '--work-dir',
         single], cwd=workspace)
    log = run(dist_train(configs['sharded'], sharded), cwd=workspace,
              env=dist_env())
    return dict(configs=configs, single=single, sharded=sharded, log=log,
                base=workspace / f'{name}_base.pth')


@pytest.fixture(scope='module')
def vit(workspace) -> dict:
    return train_pair(workspace, 'vit', VIT)


@pytest.fixture(scope='module')
def swin(workspace) -> dict:
    return train_pair(workspace, 'swin', SWIN)


@pytest.fixture(params=['vit', 'swin'])
def runs(request) -> dict:
    return request.getfixturevalue(request.param)


def frozen_shares(log: str) -> List[float]:
    """Each process's held / whole frozen bytes, from the wrapper's line."""
    line = re.search(r'Frozen parameters held per process: (.*)', log)
    assert line, log[-3000:]
    shares = [int(held.replace(',', '')) / int(full.replace(',', ''))
              for held, full in re.findall(r'rank \d+: ([\d,]+) of ([\d,]+) '
                                           'bytes', line.group(1))]
    assert len(shares) == 2, line.group(0)
    return shares


# --------------------------------------------------------------------------
# training: averaged gradients, sharded memory
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_sharded_training_equals_one_process_with_the_same_global_batch(
        runs):
    single = read_checkpoint(runs['single'] / f'iter_{ITERS}.pth')
    sharded = read_checkpoint(runs['sharded'] / f'iter_{ITERS}.pth')
    state, ref = sharded['state_dict'], single['state_dict']
    assert state.keys() == ref.keys()
    prompts = [k for k in state if 'prompt' in k]
    heads = [k for k in state if k.startswith(('decode_head.',
                                              'auxiliary_head.'))]
    assert prompts and heads
    start = read_checkpoint(runs['single'] / 'iter_1.pth')['state_dict']
    for key in prompts + heads:
        scale = ref[key].abs().max().item()
        error = (state[key] - ref[key]).abs().max().item()
        assert error <= RELATIVE_TOLERANCE * scale, (key, error, scale)
    # Both moved far more than the tolerance in steps 2 and 3: gradients
    # summed over the processes (steps twice as long) could not pass.
    for keys in (prompts, heads):
        moved = max((ref[k] - start[k]).abs().max().item() for k in keys)
        scale = max(ref[k].abs().max().item() for k in keys)
        assert moved > 100 * RELATIVE_TOLERANCE * scale, (keys, moved)
    # both averaged, ranks agreeing: the loss logged is the global one
    assert 'Distributed training: True' in runs['log']


@pytest.mark.slow
def test_each_process_holds_about_half_of_the_frozen_bytes(runs):
    shares = frozen_shares(runs['log'])
    assert max(shares) <= MAX_FROZEN_SHARE, shares
    assert 'stay whole on every process' in runs['log']
    assert 'still referenced after sharding' not in runs['log']


# --------------------------------------------------------------------------
# task files
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_task_files_have_the_one_process_format(runs):
    single = read_checkpoint(runs['single'] / f'iter_{ITERS}.pth')
    sharded = read_checkpoint(runs['sharded'] / f'iter_{ITERS}.pth')
    state, ref = sharded['state_dict'], single['state_dict']
    assert [(k, v.shape, v.dtype) for k, v in state.items()] == \
        [(k, v.shape, v.dtype) for k, v in ref.items()]
    assert all(type(v) is torch.Tensor for v in state.values())
    backbone = [k for k in state if k.startswith('backbone.')]
    assert backbone and all('prompt_embeddings' in k for k in backbone)
    assert state._metadata == ref._metadata
    assert sharded['meta'][TUNED_META_KEY] == single['meta'][TUNED_META_KEY]
    assert sharded['optimizer']['param_groups'] == \
        single['optimizer']['param_groups']
    assert sharded['optimizer']['state'].keys() == \
        single['optimizer']['state'].keys()
    assert not any(isinstance(v, DTensor)
                   for s in sharded['optimizer']['state'].values()
                   for v in s.values())


@pytest.mark.slow
def test_init_model_loads_a_sharded_runs_task_file(runs):
    from mmseg.apis import init_model
    config = str(runs['configs']['sharded'])
    path = str(runs['sharded'] / f'iter_{ITERS}.pth')
    loaded = init_model(config, path, device='cpu')
    ours = model_from_config(config)
    load_tuned_checkpoint(ours, path)
    for model in (loaded, ours):
        model.eval()
    data = make_batch(2, size=(64, 64))
    with torch.no_grad():
        inputs = loaded.data_preprocessor(data, False)['inputs']
        logits = loaded(inputs, mode='tensor')
        assert torch.equal(logits, ours(inputs, mode='tensor'))
    # the frozen backbone is the base file's, not a random one
    base = torch.load(runs['base'], weights_only=True)
    backbone = loaded.backbone.state_dict()
    for key, value in base.items():
        # VPTTimmViT's base file is in timm's layout
        key = key if key in backbone else 'timm_model.' + key
        assert torch.equal(backbone[key], value), key


# --------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_then_resume_of_a_sharded_run_is_bit_identical(
        workspace, vit):
    config = vit['configs']['sharded']
    work = workspace / 'vit_fsdp_killed'
    start_and_kill(dist_train(config, work), workspace,
                   kill_on=logged_iter(2), env=dist_env())
    saved = last_saved_iter(work)
    assert saved < ITERS
    log = run(dist_train(config, work, '--resume'), cwd=workspace,
              env=dist_env())
    assert f'resumed epoch: 0, iter: {saved}' in log
    assert 'Restoring the RNG states of iteration' in log
    assert_same_training_state(
        read_checkpoint(work / f'iter_{ITERS}.pth'),
        read_checkpoint(vit['sharded'] / f'iter_{ITERS}.pth'))


# --------------------------------------------------------------------------
# switching it on
# --------------------------------------------------------------------------
def test_fsdp_flag_selects_the_wrapper_and_keeps_its_settings():
    cfg = Config(dict(default_scope='mmseg',
                      model_wrapper_cfg=dict(reshard_after_forward=False)))
    enable_fsdp(cfg)
    assert cfg.model_wrapper_cfg == dict(type='VPTFullyShardedWrapper',
                                         reshard_after_forward=False)
    cfg = Config(dict(model_wrapper_cfg=dict(
        type='MMDistributedDataParallel')))
    with pytest.raises(ValueError, match="--fsdp selects model_wrapper_cfg "
                       "type VPTFullyShardedWrapper, but the config sets "
                       "model_wrapper_cfg.type='MMDistributedDataParallel'"):
        enable_fsdp(cfg)


def test_fsdp_without_a_launcher_is_refused(tmp_path):
    failure = run_fails([PYTHON, REPO / 'tools/train.py', 'config.py',
                         '--fsdp'], cwd=tmp_path)
    assert '--fsdp shards the backbone across processes: start them with ' \
        'tools/dist_train.sh CONFIG NPROC --fsdp' in failure


def test_sharded_training_without_base_weights_is_refused(tmp_path):
    # The frozen weights would have to be in every checkpoint, and a
    # sharded run cannot gather them there. The wrapper checks this at the
    # first training step, on every process.
    paths = write_configs(tmp_path, 'vit', VIT)
    model = model_from_config(str(paths['sharded']))
    require_base_weights(model)  # with base weights: fine
    model = model_from_config(str(paths['sharded']), cfg_options={
        'model.backbone.init_cfg': None})
    with pytest.raises(ValueError) as err:
        require_base_weights(model)
    assert str(err.value).startswith(
        'VPTFullyShardedWrapper: training with a sharded backbone needs its '
        "base weights, model.backbone.init_cfg=dict(type='Pretrained', "
        'checkpoint=...)')


# A one-process gloo group, a sharded tensor in a state dict: refused.
SHARD_IN_STATE = """
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
from mmseg_vpt.engine.fsdp import check_unsharded
dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{port}',
                        rank=0, world_size=1)
mesh = init_device_mesh('cpu', (1, ))
state = {{'head.weight': torch.ones(2),
          'backbone.layers.0.weight': distribute_tensor(
              torch.ones(4, 2), mesh, [Shard(0)])}}
try:
    check_unsharded(state, 'The checkpoint')
finally:
    dist.destroy_process_group()
"""


def test_a_checkpoint_holding_a_shard_is_refused(tmp_path):
    failure = run_fails([PYTHON, '-c', SHARD_IN_STATE.format(
        port=free_port())], cwd=tmp_path, env={'PYTHONPATH': str(REPO)})
    assert ('RuntimeError: The checkpoint would hold 1 tensors that '
            'VPTFullyShardedWrapper shards across the processes '
            '(backbone.layers.0.weight), of which this process has a part '
            'only.') in failure


def test_wrapper_needs_a_backbone_with_layers():
    with pytest.raises(TypeError, match='VPTFullyShardedWrapper shards '
                       r'model.backbone layer by layer \(its layer_modules'):
        VPTFullyShardedWrapper(torch.nn.Linear(2, 2))
