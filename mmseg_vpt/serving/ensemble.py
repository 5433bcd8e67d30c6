"""A prompt ensemble as an mmseg segmentor, for mmengine's test loop."""
from typing import List, Optional, Sequence

from mmengine.config import Config
from mmengine.model import BaseModel
from mmseg.registry import MODELS

from .multitask import MultiTaskSegmentor

ENSEMBLE_TASK = 'ensemble'


@MODELS.register_module()
class PromptEnsembleSegmentor(BaseModel):
    """K checkpoints of one segmentor config (e.g. K training seeds of a
    task) predicting the mean of their softmax outputs. Their K prompt sets
    run as K rows of one batch through the shared frozen backbone
    (:class:`MultiTaskSegmentor`); each checkpoint is checked against the
    base weights the config's backbone names.

    ``tools/test.py CONFIG CKPT_1 ... CKPT_K`` puts it in place of
    ``cfg.model``; the dataloader, evaluator and hooks stay the config's.

    Args:
        segmentor: The config's ``model`` (an ``EncoderDecoder``).
        checkpoints: The K checkpoints (tuned-only or full).
        test_pipeline: The config's test pipeline (for :meth:`predict`
            on images; the test loop's dataloader has its own).
        base_weights: Base weights file instead of the config's.
        data_preprocessor: What mmengine's runner passes on from the
            config; the members preprocess with ``segmentor``'s own, which
            the config's top-level one is merged into.
    """

    def __init__(self, segmentor: dict, checkpoints: Sequence[str],
                 test_pipeline: Optional[list] = None,
                 base_weights: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        cfg = Config(dict(model=segmentor, test_pipeline=test_pipeline))
        self.multitask = MultiTaskSegmentor(cfg, base_weights)
        self.multitask.add_task(ENSEMBLE_TASK, list(checkpoints), config=cfg)

    @property
    def dataset_meta(self) -> dict:
        task = self.multitask.task(ENSEMBLE_TASK)
        return dict(classes=task.classes, palette=task.palette)

    def test_step(self, data: dict) -> List:
        samples = data['data_samples']
        return self.multitask.predict_data(data['inputs'], samples,
                                           [ENSEMBLE_TASK] * len(samples))

    val_step = test_step

    def init_weights(self) -> None:
        """Nothing to do: the base and the checkpoints are loaded when it is
        built (mmengine's runner would otherwise re-initialise the heads)."""

    def forward(self, inputs, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError('PromptEnsembleSegmentor only predicts '
                             f"(mode='predict'), got mode={mode!r}")
        return self.test_step(dict(inputs=inputs, data_samples=data_samples))
