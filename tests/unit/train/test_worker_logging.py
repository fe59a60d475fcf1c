"""Ray Train's per-report log line is silenced in the workers (the driver prints progress)."""

from __future__ import annotations

import logging

from jumpray.train.worker import _quiet_ray_report_log


def test_ray_report_logger_is_raised_to_warning():
    from ray.train.v2._internal.execution import context

    logger = logging.getLogger(context.__file__)
    logger.setLevel(logging.NOTSET)
    _quiet_ray_report_log()
    assert logger.getEffectiveLevel() == logging.WARNING
    # The logger Ray writes the line with is that one (it is named by the module's file path).
    assert context.logger is logger
