"""Logging helpers shared by the analysis, inference and report code."""
import logging
import sys
from contextlib import contextmanager, redirect_stdout
from typing import Iterator, TextIO


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


@contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything printed or logged to stdout inside the block to
    stderr, and yield the real stdout.

    For tools whose stdout is machine-readable output (CSV, JSON). mmengine's
    logger writes to the ``sys.stdout`` of the moment it was created, so a
    logger made inside the block writes to stderr, and the stdout handlers of
    the current one are switched to stderr for the block.
    """
    from mmengine.logging import MMLogger
    stdout = sys.stdout
    with redirect_stdout(sys.stderr):
        handlers = [
            h for h in MMLogger.get_current_instance().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is stdout
        ]
        for handler in handlers:
            handler.setStream(sys.stderr)
        try:
            yield stdout
        finally:
            for handler in handlers:
                handler.setStream(stdout)
