"""Tuned-only (per-task) checkpoints.

With VPT the backbone stays frozen, so a task's checkpoint only needs what was
trained plus what the shared base weights cannot reproduce. The base weights
are the file the backbone's ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` names. :func:`split_tuned` is the one rule for what a task's
checkpoint contains; everything else here applies it or undoes it:

* :func:`plan_tuned` decides, once per run, which tensors a model's
  checkpoints omit (and fingerprints them); :meth:`TunedPlan.apply` filters a
  checkpoint dict and adds the metadata (``TunedCheckpointHook`` calls it in
  ``before_save_checkpoint``).
* Loading: the base weights are loaded into the module and the omitted
  tensors put back into the state dict before the ordinary load, by one
  function, :func:`~mmseg_vpt.models.base_weights.load_base_weights`
  (with the models, since a backbone's own loading runs it), reached two
  ways:

  - from the module itself: :meth:`TunedPlan.apply` also writes a
    :class:`BaseRecord` into the state dict's metadata
    (``state_dict._metadata['backbone']['vpt_base_weights']``, where torch
    keeps per-module versions), and the VPT backbones' state-dict loading
    (:func:`load_into_backbone`) reads it. So mmseg's ``init_model``,
    ``MMSegInferencer`` and mmengine's ``load_checkpoint`` load task files
    without any of this project's tools in the call chain;
  - from the tools: :func:`checkpoint_state` (``TunedCheckpointHook``, i.e.
    ``load_from``, ``--resume``, ``tools/test.py``;
    :func:`load_tuned_checkpoint` for ``tools/infer.py`` and the APIs) also
    reads format-1 files (no record) and checks the whole checkpoint against
    the model: any key or shape that does not fit is an error unless a
    partial load is asked for (``--load-partial``).

  A frozen VPT backbone refuses a load that would leave the weights of its
  frozen layers at their random construction-time values.
* :func:`merge_tuned` / :func:`extract_tuned` turn a tuned checkpoint into a
  full standalone one and back, bit-exactly (``tools/merge_tuned.py``,
  ``tools/extract_tuned.py``).

Base weights always load through the backbone's own ``init_weights`` (the
path training takes, including mmseg's position-embedding resizing), never
through a second implementation. A tensor is omitted only if that path,
run on a copy of the backbone, gives back exactly the value the model holds;
its SHA-256 is recorded, and loading fails unless the base reproduces it.

The metadata lives in ``checkpoint['meta']['vpt_tuned']``::

    version          2 (1: written before the base record existed)
    module           'backbone' (the submodule the base file initialises)
    base_checkpoint  the path the config's init_cfg named when saving
    base_abspath     that path made absolute in the training run
    base_config_key  'model.backbone.init_cfg.checkpoint'
    base_sha256      SHA-256 of the base file's bytes
    base_bytes       its size
    omitted          {model key: sha256[:16] of the tensor}, in model order
    omitted_numel    elements in the omitted tensors
    num_tuned        tensors stored in the checkpoint
    policy           what trained: backbone type, frozen_exclude,
                     prompt_length / layers / init, trainable and total
                     parameter counts

The base record in the state dict's metadata holds the base fields again,
with module-relative keys, so that the module needs nothing else.

Where the base file is looked for, first match wins: an explicit argument
(``base_path``), the environment variable ``MMSEG_VPT_BASE_WEIGHTS`` (a file,
or a folder holding a file of the recorded name), the module's own
``Pretrained`` init_cfg; only when none of these is set, the recorded path
and then its absolute form. Its SHA-256 must match the recorded one.
"""
from ..models.base_weights import (BASE_MODULE, BASE_RECORD_KEY,
                                   BASE_WEIGHTS_ENV, DIGEST_CHARS,
                                   FORMAT_VERSION, READABLE_VERSIONS,
                                   BaseRecord, BaseWeightsMismatch,
                                   FrozenWeightsNotLoaded, StateDict,
                                   TunedCheckpointError, file_sha256,
                                   load_base_weights, load_into_backbone,
                                   pretrained_checkpoint, resolve_base_file,
                                   run_base_init, tensor_digest)
from ..utils.checkpoints import read_checkpoint
from ..utils.params import unwrap_model
from ..utils.state_fit import StateFit
from .base import (MERGED_META_KEY, TUNED_META_KEY, BaseSpec,
                   CheckpointMismatch, base_file_keys, base_reference,
                   find_base)
from .loading import (PARTIAL_HINT, check_state_fits, checkpoint_state,
                      extract_tuned, load_tuned_checkpoint, merge_tuned,
                      model_from_config, strip_module_prefix, tuned_record)
from .saving import (TunedPlan, TunedSplit, freeze_policy, is_tuned_checkpoint,
                     plan_tuned, split_tuned, state_bytes, trainable_keys)

__all__ = [
    'base_file_keys', 'BASE_MODULE', 'BASE_RECORD_KEY', 'base_reference',
    'BASE_WEIGHTS_ENV', 'BaseRecord', 'BaseSpec', 'BaseWeightsMismatch',
    'CheckpointMismatch', 'DIGEST_CHARS', 'file_sha256', 'find_base',
    'FORMAT_VERSION', 'FrozenWeightsNotLoaded', 'MERGED_META_KEY',
    'pretrained_checkpoint', 'READABLE_VERSIONS', 'run_base_init',
    'StateDict', 'tensor_digest', 'TUNED_META_KEY', 'TunedCheckpointError',
    'unwrap_model', 'freeze_policy', 'is_tuned_checkpoint', 'plan_tuned',
    'split_tuned', 'state_bytes', 'trainable_keys', 'TunedPlan',
    'TunedSplit', 'check_state_fits', 'checkpoint_state', 'extract_tuned',
    'load_base_weights', 'load_into_backbone', 'load_tuned_checkpoint',
    'merge_tuned', 'model_from_config', 'PARTIAL_HINT', 'read_checkpoint',
    'resolve_base_file', 'StateFit', 'strip_module_prefix', 'tuned_record'
]
