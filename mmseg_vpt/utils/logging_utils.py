"""Logging helpers shared by the analysis and inference code."""
import logging
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def mmengine_log_level(level: int = logging.WARNING) -> Iterator[None]:
    """Set mmengine's current logger to ``level`` inside the block and
    restore its level after (mmengine logs one INFO line per parameter when
    initialising weights or building an optimizer)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
