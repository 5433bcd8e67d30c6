"""Log how many parameters are trained, the number VPT is about."""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..utils.params import count_parameters, format_parameter_counts


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log parameter counts once before training.

    Runs in ``before_train``, after the model is built, frozen and wrapped,
    so the numbers reflect what the optimizer actually updates.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        runner.logger.info(format_parameter_counts(
            count_parameters(runner.model)))
