"""One frozen backbone, many tasks, one forward pass per batch.

With VPT the backbone's weights are the same for every task; only prompts,
neck and heads differ. :class:`MultiTaskSegmentor` loads the base weights
once and any number of task files beside them. A batch may mix tasks: the
backbone runs once over all of its samples (per input size), each sample
carrying its own task's prompts (:class:`~mmseg_vpt.models.prompt_flow.
MixedPromptFlow`), and each sample's features go to its task's neck, head
and post-processing (``mode='whole'`` or sliding windows, as the task's
``test_cfg`` says, then resizing to the input image).

A task may also be an ensemble of K prompt sets with their heads (K seeds
of one task): its K members run as K rows of the same batch and its
prediction averages their softmax outputs.

    >>> model = MultiTaskSegmentor('configs/vpt/setr_..._ade20k-512x512.py')
    >>> model.add_task('ade', 'work_dirs/ade/iter_160000.pth')
    >>> model.add_task('roads', ['seed0.pth', 'seed1.pth', 'seed2.pth'])
    >>> results = model.predict([img_a, img_b], ['ade', 'roads'])
    >>> label = results[0].pred_sem_seg.data[0]           # (H, W) class ids
"""
import contextlib
import copy
import inspect
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Dict, Iterator, List, Optional, Sequence, Tuple, Union)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..apis.inference import class_meta, inference_pipeline, read_image
from ..checkpoint import (PARTIAL_HINT, BaseWeightsMismatch,
                          CheckpointMismatch, check_state_fits,
                          file_sha256, pretrained_checkpoint, read_checkpoint,
                          strip_module_prefix, tuned_record)
from ..models.pixel_prompts import PaddingPromptMixin
from ..utils.checkpoints import local_checkpoint_path
from ..utils.config import read_config
from ..utils.logging_utils import mmengine_log_level
from .task_prompts import TaskPrompts

ImageInput = Union[str, Path, np.ndarray]

# backbone arguments a task may set its own way: its prompts, and what
# matters only while training or is chosen per forward pass here
TASK_OWN_KEYS = ('prompt_length', 'prompt_layers', 'prompt_init',
                 'prompt_proj_dims', 'prompt_dropout', 'frozen_exclude',
                 'frozen_eval', 'init_cfg', 'pretrained', 'out_indices',
                 'drop_rate', 'drop_path_rate', 'attn_drop_rate', 'with_cp',
                 'fused_attn', 'prompt_shared')
PROMPT_ARGS = ('prompt_length', 'prompt_layers', 'prompt_init',
               'prompt_proj_dims', 'prompt_shared')
# mmseg's backbones and their VPT subclasses (prompt_length=0 is the parent)
VPT_TYPES = {'VisionTransformer': 'VPTVisionTransformer',
             'SwinTransformer': 'VPTSwinTransformer'}


class TaskError(ValueError):
    """A task cannot be added, or a request names no task."""


class TaskExists(TaskError):
    """A task of that name is already loaded."""


class UnknownTask(TaskError, KeyError):
    """A request names a task that is not loaded."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TaskConflict(TaskError):
    """The task cannot share this segmentor's frozen backbone."""


class FrozenWeightsChanged(TaskConflict):
    """The task file changes weights that the shared backbone keeps frozen
    (Bias, VPT+Bias or full fine-tuning)."""


def _plain(value):
    """Config values with tuples as lists, for comparisons."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _backbone_type(cfg: dict) -> str:
    name = str(cfg.get('type', '')).split('.')[-1]
    return VPT_TYPES.get(name, name)


def _arg_defaults(type_name: str) -> dict:
    """The default arguments of a registered class and its parents (a VPT
    backbone passes most of its arguments on to mmseg's)."""
    cls = MODELS.get(type_name)
    if cls is None:
        raise TaskError(f'backbone type {type_name!r} is not registered')
    defaults = {}
    for klass in reversed(cls.__mro__):
        if '__init__' in vars(klass):
            defaults.update(
                (k, p.default) for k, p in inspect.signature(
                    klass.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty)
    return defaults


def _take(feature, rows: torch.Tensor):
    """Rows of a backbone output (a tensor, or [map, cls_token])."""
    if isinstance(feature, torch.Tensor):
        return feature.index_select(0, rows)
    return type(feature)(_take(f, rows) for f in feature)


def slide_boxes(test_cfg, height: int, width: int
                ) -> List[Tuple[int, int, int, int]]:
    """The crop boxes (y1, y2, x1, x2) of mmseg's ``slide_inference``."""
    h_stride, w_stride = test_cfg['stride']
    h_crop, w_crop = test_cfg['crop_size']
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


@dataclass
class TaskMember:
    """One prompt set with its neck and heads: a task's segmentor whose
    backbone is a :class:`TaskPrompts`."""
    model: nn.Module
    out_indices: List[int]
    source: str

    @property
    def prompts(self) -> TaskPrompts:
        return self.model.backbone

    def boxes(self, height: int, width: int) -> List[Optional[tuple]]:
        if self.model.test_cfg.get('mode', 'whole') == 'slide':
            return slide_boxes(self.model.test_cfg, height, width)
        return [None]


@dataclass
class Task:
    """A named task: one member, or K for a prompt ensemble."""
    name: str
    members: List[TaskMember]
    classes: Tuple[str, ...]
    palette: List[List[int]]
    pipeline: Compose
    files: List[str] = field(default_factory=list)
    ensemble: bool = False  # given as a list: predicts mean probabilities

    @property
    def num_classes(self) -> int:
        return self.members[0].model.decode_head.num_classes

    def describe(self) -> dict:
        m = self.members[0]
        return dict(
            name=self.name, classes=list(self.classes),
            palette=self.palette, num_classes=self.num_classes,
            ensemble_size=len(self.members), files=list(self.files),
            prompt_length=m.prompts.prompt_length,
            prompted_layers=len(m.prompts.prompt_layers),
            decode_head=type(m.model.decode_head).__name__,
            test_mode=m.model.test_cfg.get('mode', 'whole'))


@dataclass
class _Unit:
    """One backbone input: a whole image or a sliding-window crop of one
    sample for one task member."""
    sample: int
    member: TaskMember
    crop: torch.Tensor  # (3, h, w)
    box: Optional[tuple]


class MultiTaskSegmentor(nn.Module):
    """One frozen VPT backbone serving many segmentation tasks at once.

    Args:
        config: The base: a config whose backbone's ``init_cfg`` names the
            pretrained weights, or a task file carrying such a config.
        base_weights: Use this weights file instead of the config's.
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    Tasks come from tuned-only task files (checked against the base file's
    SHA-256, as ``tools/test.py`` checks them) or full checkpoints (their
    backbone tensors must equal the base's, and are dropped). A task whose
    file changes frozen backbone weights (Bias, VPT+Bias) cannot share the
    forward pass and is refused (:class:`FrozenWeightsChanged`).
    """

    def __init__(self, config: Union[str, Path, Config],
                 base_weights: Optional[str] = None,
                 device: str = 'cpu') -> None:
        super().__init__()
        if str(device).startswith('cuda') and not torch.cuda.is_available():
            raise RuntimeError(f'device={device!r} but CUDA is not '
                               "available; use device='cpu'")
        self.cfg = read_config(config, key='the base')
        init_default_scope(self.cfg.get('default_scope', 'mmseg'))
        bcfg = copy.deepcopy(self.cfg.model.backbone)
        bcfg.type = _backbone_type(bcfg)
        if base_weights is not None:
            bcfg.init_cfg = dict(type='Pretrained', checkpoint=base_weights)
        self.base_path = pretrained_checkpoint(bcfg.get('init_cfg'))
        if self.base_path is None:
            raise TaskError(
                'the base config\'s backbone has no init_cfg=dict('
                "type='Pretrained', checkpoint=...): a shared backbone needs "
                'its base weights file (pass base_weights=PATH, or '
                '--base-weights)')
        self._backbone_cfg = self._comparable(bcfg)
        location = self._backbone_cfg.get('prompt_location', 'prepend')
        if location != 'prepend':
            raise TaskError(
                f'the backbone has prompt_location={location!r}; a shared '
                "backbone serves prepended prompts only ('prepend')")
        cls = MODELS.get(bcfg.type)
        if issubclass(cls, PaddingPromptMixin):
            raise TaskError(
                f'{bcfg.type} prompts by padding the input image, which then '
                'differs per task; a shared backbone serves token prompts '
                'only (VPTVisionTransformer, VPTSwinTransformer, VPTTimmViT)')
        if not hasattr(cls, 'mixed_prompts'):
            raise TaskError(f'{bcfg.type} is not a VPT backbone; serving '
                            'needs VPTVisionTransformer, VPTSwinTransformer '
                            'or VPTTimmViT')
        bcfg.update(prompt_length=0, frozen_exclude=[])
        backbone = MODELS.build(bcfg)
        with mmengine_log_level():
            backbone.init_weights()
        self.backbone = backbone.to(device).eval()
        self.base_sha256 = file_sha256(local_checkpoint_path(self.base_path))
        self._base_out = self._out_indices(bcfg, bcfg.type)
        self.tasks: Dict[str, Task] = {}
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        """Where the backbone is (``.to()`` moves the tasks with it)."""
        return next(self.backbone.parameters()).device

    # -- tasks -------------------------------------------------------------
    def _comparable(self, bcfg) -> dict:
        """The backbone arguments every task must share with the base, with
        the class's defaults filled in (a config may spell one out)."""
        given = _plain(bcfg.to_dict() if hasattr(bcfg, 'to_dict') else
                       dict(bcfg))
        type_name = _backbone_type(given)
        plain = dict(_plain(_arg_defaults(type_name)), **given)
        plain['type'] = type_name
        return {k: v for k, v in plain.items() if k not in TASK_OWN_KEYS}

    def _out_indices(self, bcfg, type_name: str) -> List[int]:
        """A backbone config's output layers, normalised as the backbone
        does (an int is one layer; negative counts from the end)."""
        indices = bcfg.get('out_indices',
                           _arg_defaults(type_name).get('out_indices'))
        indices = [indices] if isinstance(indices, int) else list(indices)
        if not hasattr(self.backbone, 'stages'):  # Swin: stage indices
            depth = len(getattr(self.backbone, 'layers', None) or
                        self.backbone.timm_model.blocks)
            indices = [i % depth for i in indices]
        return sorted(set(indices))

    def _member(self, name: str, checkpoint: str,
                config: Optional[Union[str, Config]]) -> Tuple[TaskMember,
                                                               dict, Config]:
        """One task file as a member: its config (given, carried by the
        file, or the base's), checked against the shared backbone; its
        segmentor with :class:`TaskPrompts` as backbone; its state."""
        source = f'task {name!r} file {checkpoint}'
        ckpt = read_checkpoint(str(checkpoint), source)
        meta = ckpt.get('meta') or {}
        if config is not None:
            cfg = read_config(config, key=source)
        elif meta.get('cfg'):
            cfg = read_config(meta['cfg'], key=source)
        else:
            print_log(f'{source} carries no config; using the base config',
                      logger='current', level=logging.WARNING)
            cfg = copy.deepcopy(self.cfg)
        out_indices = self._check_shares_backbone(source, cfg, ckpt)
        bcfg = cfg.model.backbone
        defaults = _arg_defaults(_backbone_type(bcfg))
        mcfg = copy.deepcopy(cfg.model)
        mcfg.backbone = dict(type='TaskPrompts',
                             **self.backbone.prompt_geometry,
                             **{k: bcfg.get(k, defaults.get(k))
                                for k in PROMPT_ARGS})
        mcfg.train_cfg = None
        mcfg.pop('pretrained', None)
        model = MODELS.build(mcfg)
        model.load_state_dict(self._task_state(source, model, ckpt, meta),
                              strict=False)  # checked there
        model.auxiliary_head = None  # training only
        model = model.to(self.device).eval()
        return TaskMember(model, out_indices, str(checkpoint)), meta, cfg

    def _check_shares_backbone(self, source: str, cfg: Config,
                               ckpt: dict) -> List[int]:
        """Refuse a task whose backbone config or base file differs from
        the shared one; return its out_indices."""
        bcfg = cfg.model.backbone
        theirs, ours = self._comparable(bcfg), self._backbone_cfg
        differ = sorted(k for k in set(theirs) | set(ours)
                        if theirs.get(k) != ours.get(k))
        if differ:
            raise TaskConflict(
                f'{source}: its backbone differs from the shared one in '
                + '; '.join(f'{k}={theirs.get(k)!r} (shared: '
                            f'{ours.get(k)!r})' for k in differ[:6]))
        record = tuned_record(ckpt, source)
        if record is not None and record.sha256 != self.base_sha256:
            raise BaseWeightsMismatch(
                f'{source} was tuned on base weights {record.checkpoint} '
                f'(sha256 {record.sha256}), but the shared backbone holds '
                f'{self.base_path} (sha256 {self.base_sha256})')
        out_indices = self._out_indices(bcfg, _backbone_type(bcfg))
        if hasattr(self.backbone, 'stages') and not set(out_indices) <= set(
                self._base_out):
            raise TaskConflict(
                f'{source}: out_indices {out_indices} are not all outputs '
                f'of the shared Swin backbone ({self._base_out}, whose output '
                'norms are built per index)')
        return out_indices

    def _task_state(self, source: str, model: nn.Module, ckpt: dict,
                    meta: dict) -> Dict[str, torch.Tensor]:
        """The file's tensors for ``model`` (a plain dict: no base record
        in its metadata). Backbone tensors beyond the prompts must equal the
        shared backbone's (a full checkpoint's do) and are dropped."""
        state = strip_module_prefix(ckpt['state_dict'])
        own = model.state_dict()
        shared = self.backbone.state_dict()
        frozen = [k for k in state if k.startswith('backbone.')
                  and k not in own]
        changed = [k for k in frozen if k[9:] not in shared or not
                   torch.equal(state[k], shared[k[9:]].to(state[k].device))]
        if changed:
            policy = ((meta.get('vpt_tuned') or {}).get('policy') or {})
            raise FrozenWeightsChanged(
                f'{source} changes {len(changed)} weights of the frozen '
                f'backbone ({", ".join(changed[:5])}'
                f'{", ..." if len(changed) > 5 else ""})'
                + (f', tuned with frozen_exclude='
                   f'{policy.get("frozen_exclude")}' if policy else '') +
                '. Its samples cannot share the shared backbone\'s forward '
                'pass; serve it with its own segmentor (init_segmentor, '
                'tools/infer.py)')
        rest = {k: v for k, v in state.items() if k not in frozen}
        try:
            check_state_fits(model, rest, source)
        except CheckpointMismatch as err:
            # (a partial load makes no sense for a shared backbone)
            raise TaskConflict(str(err).replace(PARTIAL_HINT, '').strip()
                               ) from err
        return rest

    def add_task(self, name: str,
                 checkpoints: Union[str, Path, Sequence[Union[str, Path]]],
                 config: Optional[Union[str, Config]] = None) -> Task:
        """Load a task (one checkpoint) or a prompt ensemble (a list of
        them, e.g. K seeds; a list of one is an ensemble of one) under
        ``name``; the backbone is not reloaded. ``config`` overrides the
        config the files carry."""
        if not isinstance(name, str) or not name or '/' in name:
            raise TaskError(f'task name must be a non-empty string without '
                            f"'/', got {name!r}")
        files = [checkpoints] if isinstance(checkpoints, (str, Path)) else \
            list(checkpoints)
        if not files:
            raise TaskError(f'task {name!r}: no checkpoint given')
        members, metas, cfgs = zip(*(self._member(name, f, config)
                                     for f in files))
        first = members[0].model
        for member, cfg in zip(members[1:], cfgs[1:]):
            for what, a, b in (
                    ('num_classes', first.decode_head.num_classes,
                     member.model.decode_head.num_classes),
                    ('test_cfg', _plain(first.test_cfg),
                     _plain(member.model.test_cfg)),
                    ('test pipeline', _plain(cfgs[0].get('test_pipeline')),
                     _plain(cfg.get('test_pipeline'))),
                    ('data_preprocessor',
                     _plain(cfgs[0].model.data_preprocessor),
                     _plain(cfg.model.data_preprocessor))):
                if a != b:
                    raise TaskConflict(
                        f'ensemble {name!r}: {member.source} has another '
                        f'{what} than {members[0].source} ({b} vs {a})')
        meta = class_meta(metas[0], first.decode_head.num_classes)
        task = Task(name, list(members), meta['classes'], meta['palette'],
                    inference_pipeline(cfgs[0]), [str(f) for f in files],
                    ensemble=not isinstance(checkpoints, (str, Path)))
        with self._lock:
            if name in self.tasks:
                raise TaskExists(f'task {name!r} is already loaded; remove '
                                 'it first')
            self.tasks[name] = task
            self._register()
        return task

    def remove_task(self, name: str) -> None:
        with self._lock:
            self.task(name)
            del self.tasks[name]
            self._register()

    def _register(self) -> None:
        # the members' modules, so that .to() / state_dict() see them
        self.task_models = nn.ModuleDict({
            f'{t.name}:{i}': m.model for t in self.tasks.values()
            for i, m in enumerate(t.members)})

    def task(self, name: str) -> Task:
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTask(f'unknown task {name!r}; loaded: '
                              f'{sorted(self.tasks) or "none"}')
        return task

    # -- prediction --------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Sequence[ImageInput],
                task_names: Union[str, Sequence[str]]) -> List[SegDataSample]:
        """Segment ``images`` (paths or BGR uint8 arrays), sample ``i`` for
        task ``task_names[i]`` (one name: all the same task). Returns one
        ``SegDataSample`` per image, ``pred_sem_seg`` and ``seg_logits`` at
        the image's size (for an ensemble, ``seg_logits`` is the log of the
        members' mean softmax)."""
        images = list(images)
        names = [task_names] * len(images) if isinstance(task_names, str) \
            else list(task_names)
        if len(names) != len(images):
            raise TaskError(f'{len(images)} images but {len(names)} task '
                            'names')
        with self._lock:
            tasks = [self.task(n) for n in names]
            inputs, samples = [], []
            for img, task in zip(images, tasks):
                img = img if isinstance(img, np.ndarray) else read_image(img)
                data = task.pipeline(dict(img=img))
                inputs.append(data['inputs'])
                samples.append(data['data_samples'])
            return self._predict(tasks, inputs, samples)

    @torch.no_grad()
    def predict_data(self, inputs: Sequence[torch.Tensor],
                     data_samples: Sequence[SegDataSample],
                     task_names: Sequence[str]) -> List[SegDataSample]:
        """:meth:`predict` on samples already through their task's test
        pipeline (a dataloader's ``inputs`` and ``data_samples``)."""
        with self._lock:
            return self._predict([self.task(n) for n in task_names],
                                 list(inputs), list(data_samples))

    def _predict(self, tasks: List[Task], inputs: List[torch.Tensor],
                 samples: List[SegDataSample]) -> List[SegDataSample]:
        units, prepared = [], []
        for s, (task, x, sample) in enumerate(zip(tasks, inputs, samples)):
            batch = task.members[0].model.data_preprocessor(
                dict(inputs=[x], data_samples=[sample]), False)
            x, sample = batch['inputs'][0], batch['data_samples'][0]
            prepared.append((x, sample))
            for member in task.members:
                for box in member.boxes(*x.shape[-2:]):
                    crop = x if box is None else \
                        x[:, box[0]:box[1], box[2]:box[3]]
                    units.append(_Unit(s, member, crop, box))
        logits = self._decode(units, prepared)
        results = []
        for s, (task, (x, sample)) in enumerate(zip(tasks, prepared)):
            outs = [self._assemble(member, x, sample,
                                   [(u.box, logits[id(u)]) for u in units
                                    if u.sample == s and u.member is member])
                    for member in task.members]
            results.append(self._ensemble(task, sample, outs)
                           if task.ensemble else outs[0])
        return results

    def _decode(self, units: List[_Unit], prepared) -> Dict[int, torch.Tensor]:
        """Each unit's logits at its crop's size: one backbone pass per
        crop size over every task's units, then each member's head."""
        groups: Dict[tuple, List[_Unit]] = {}
        for u in units:
            groups.setdefault(tuple(u.crop.shape), []).append(u)
        out = {}
        for group in groups.values():
            feats, union = self.backbone_features(
                torch.stack([u.crop for u in group]),
                [u.member for u in group])
            for member in {id(u.member): u.member for u in group}.values():
                mine = [i for i, u in enumerate(group) if u.member is member]
                rows = torch.tensor(mine, device=self.device)
                x = [_take(feats[union.index(i)], rows)
                     for i in member.out_indices]
                model = member.model
                if model.with_neck:
                    x = model.neck(x)
                metas = []
                for i in mine:
                    u = group[i]
                    meta = dict(prepared[u.sample][1].metainfo)
                    if u.box is not None:  # as mmseg's slide_inference
                        meta['img_shape'] = u.crop.shape[-2:]
                    metas.append(meta)
                seg = model.decode_head.predict(x, metas, model.test_cfg)
                for i, row in zip(mine, seg):
                    out[id(group[i])] = row[None]
        return out

    def backbone_features(self, inputs: torch.Tensor,
                          members: Sequence[TaskMember]
                          ) -> Tuple[tuple, List[int]]:
        """The shared backbone once over ``inputs`` (N, 3, H, W), sample
        ``i`` with the prompts of ``members[i]``. Returns the outputs at the
        union of the members' out_indices, and that union."""
        sets: Dict[int, int] = {}
        for m in members:
            sets.setdefault(id(m), len(sets))
        prompt_sets = list({id(m): m.prompts for m in members}.values())
        index = torch.tensor([sets[id(m)] for m in members],
                             device=inputs.device)
        union = sorted(set().union(*(m.out_indices for m in members)))
        with self._backbone_outputs(union), \
                self.backbone.mixed_prompts(prompt_sets, index):
            return self.backbone(inputs), union

    @contextlib.contextmanager
    def _backbone_outputs(self, indices: List[int]) -> Iterator[None]:
        """The shared backbone returns the layers ``indices`` meanwhile."""
        saved = self.backbone.out_indices
        self.backbone.out_indices = list(indices)
        try:
            yield
        finally:
            self.backbone.out_indices = saved

    @staticmethod
    def _assemble(member: TaskMember, x: torch.Tensor,
                  sample: SegDataSample, pieces) -> SegDataSample:
        """A member's logits for the whole input (sliding windows averaged
        as in mmseg's ``slide_inference``), post-processed by its
        segmentor to the image's original size."""
        if len(pieces) == 1 and pieces[0][0] is None:
            seg = pieces[0][1]
        else:
            H, W = x.shape[-2:]
            preds = x.new_zeros((1, pieces[0][1].shape[1], H, W))
            count = x.new_zeros((1, 1, H, W))
            for (y1, y2, x1, x2), logit in pieces:
                preds += F.pad(logit, (x1, W - x2, y1, H - y2))
                count[:, :, y1:y2, x1:x2] += 1
            seg = preds / count
        return member.model.postprocess_result(seg, [sample.clone()])[0]

    @staticmethod
    def _ensemble(task: Task, sample: SegDataSample,
                  outs: List[SegDataSample]) -> SegDataSample:
        """The members' mean softmax (sigmoid for one class, which
        ``postprocess_result`` already applied)."""
        logits = torch.stack([o.seg_logits.data for o in outs])
        result = sample.clone()
        if logits.shape[1] == 1:
            probs = logits.mean(0)
            threshold = task.members[0].model.decode_head.threshold
            pred, seg = (probs > threshold).to(probs), probs
        else:
            probs = logits.softmax(1).mean(0)
            pred, seg = probs.argmax(0, keepdim=True), probs.log()
        result.set_data(dict(seg_logits=PixelData(data=seg),
                             pred_sem_seg=PixelData(data=pred)))
        return result

    def tasks_info(self) -> List[dict]:
        with self._lock:
            return [t.describe() for t in self.tasks.values()]
