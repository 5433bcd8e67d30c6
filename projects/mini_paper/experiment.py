"""The experiment: pretrain a backbone on one labelling of the scenes, then
adapt it to another with every protocol, seed by seed."""
import time
from dataclasses import asdict
from typing import Callable, Optional, Sequence

import torch

from mmseg_vpt.utils.params import count_parameters

from .config import (ENSEMBLES, PROTOCOL_NAMES, PROTOCOLS, ROWS,
                     MiniPaperConfig, scenes)
from .data import SYNTHETIC_NOTE, SceneSet, to_tensor
from .model import MiniSegmentor, PromptEnsemble, build_protocol_model
from .train import evaluate, train_steps


def pretrain(cfg: MiniPaperConfig, seed: int,
             log: Callable[[str], None] = print) -> dict:
    """Pretrain the backbone on the pretraining task; returns its state dict
    and the pretraining task's validation mIoU."""
    torch.manual_seed(seed)
    data = scenes(cfg, cfg.num_pretrain_images, seed=1000 * seed + 1)
    val = scenes(cfg, cfg.num_val_images, seed=1000 * seed + 2)
    model = MiniSegmentor(cfg, data.num_classes[cfg.pretrain_task])
    model.backbone.init_weights()
    t0 = time.perf_counter()
    lr = cfg.pretrain_lr
    loss = train_steps(model, data, cfg.pretrain_task, cfg.pretrain_steps,
                       cfg.batch_size, dict(head=lr, backbone=lr), 0.05,
                       seed)
    miou, _ = evaluate(model, val, cfg.pretrain_task)
    seconds = time.perf_counter() - t0
    log(f'[seed {seed}] pretraining by {cfg.pretrain_task}: '
        f'{cfg.pretrain_steps} steps in {seconds:.0f}s, loss {loss:.3f}, '
        f'val mIoU {miou:.3f}')
    state = {k: v.detach().clone()
             for k, v in model.backbone.state_dict().items()}
    return dict(state=state, miou=miou, seconds=seconds)


def adapt(cfg: MiniPaperConfig, protocol: str, base_state: dict,
          train: SceneSet, val: SceneSet, seed: int,
          models: Optional[list] = None) -> dict:
    """Adapt the pretrained backbone to the downstream task under
    ``protocol`` and evaluate it (the model is appended to ``models``)."""
    task = cfg.downstream_task
    model = build_protocol_model(cfg, protocol, base_state,
                                 train.num_classes[task], seed)
    counts = count_parameters(model)
    t0 = time.perf_counter()
    token_init = PROTOCOLS[protocol].get('token_init')
    if token_init:  # from the first training batch's tokens
        model.backbone.init_prompts_from_tokens(
            to_tensor(train.images[:cfg.batch_size]), token_init, seed)
    loss = train_steps(model, train, task, cfg.adapt_steps, cfg.batch_size,
                       cfg.lrs, cfg.weight_decay, seed + 11)
    seconds = time.perf_counter() - t0
    miou, per_class = evaluate(model, val, task)
    if models is not None:
        models.append(model)
    return dict(protocol=protocol, seed=seed, miou=miou, iou=per_class,
                loss=loss, tunable=counts['trainable'], total=counts['total'],
                seconds=seconds)


def adapt_ensemble(cfg: MiniPaperConfig, name: str, base_state: dict,
                   train: SceneSet, val: SceneSet, seed: int,
                   first: Optional[MiniSegmentor] = None) -> dict:
    """An ensemble row: its protocol trained with K seeds (``first``, the
    protocol's own row of this seed, is reused as member 0), evaluated as
    one :class:`PromptEnsemble`."""
    protocol, k = ENSEMBLES[name]
    members = [] if first is None else [first]
    rows = []
    while len(members) < k:
        member_seed = seed + 1000 * len(members)
        rows.append(adapt(cfg, protocol, base_state, train, val,
                          member_seed, members))
    miou, per_class = evaluate(PromptEnsemble(members), val,
                               cfg.downstream_task)
    tunable = sum(count_parameters(m)['trainable'] for m in members)
    return dict(protocol=name, seed=seed, miou=miou, iou=per_class,
                members=k, member_mious=[r['miou'] for r in rows],
                tunable=tunable, total=count_parameters(members[0])['total']
                + tunable - count_parameters(members[0])['trainable'],
                seconds=sum(r['seconds'] for r in rows))


def run_seed(cfg: MiniPaperConfig, seed: int,
             protocols: Sequence[str] = ROWS,
             log: Callable[[str], None] = print) -> dict:
    """Pretrain once, then adapt with every protocol (ensemble rows last)."""
    base = pretrain(cfg, seed, log)
    train = scenes(cfg, cfg.num_train_images, seed=1000 * seed + 3)
    val = scenes(cfg, cfg.num_val_images, seed=1000 * seed + 4)
    rows, models = [], {}
    order = [p for p in protocols if p in PROTOCOLS] + \
        [p for p in protocols if p in ENSEMBLES]
    for protocol in order:
        if protocol in ENSEMBLES:
            row = adapt_ensemble(cfg, protocol, base['state'], train, val,
                                 seed, models.get(ENSEMBLES[protocol][0]))
        else:
            kept = []
            row = adapt(cfg, protocol, base['state'], train, val, seed,
                        kept)
            models[protocol] = kept[0]
        log(f'[seed {seed}] {PROTOCOL_NAMES[protocol]:<16} mIoU '
            f'{row["miou"]:.3f}  tunable {row["tunable"]:,}  '
            f'({row["seconds"]:.0f}s)')
        rows.append(row)
    return dict(seed=seed, pretrain_miou=base['miou'],
                pretrain_seconds=base['seconds'], rows=rows)


def run_mini_paper(cfg: MiniPaperConfig, seeds: Sequence[int],
                   protocols: Sequence[str] = ROWS,
                   log: Callable[[str], None] = print) -> dict:
    """Every seed's run, with the settings, total time and the synthetic-data
    note: what ``results.json`` holds."""
    t0 = time.perf_counter()
    runs = [run_seed(cfg, s, protocols, log) for s in seeds]
    return dict(config=asdict(cfg), seeds=list(seeds), runs=runs,
                seconds=time.perf_counter() - t0, note=SYNTHETIC_NOTE)

