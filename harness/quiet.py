"""Third-party progress bars and INFO chatter off unless asked for (-v): they bury what the harness reports.

The noise: transformers' `Loading weights ... 272/272` bar, huggingface_hub's download bars, sentence-
transformers' INFO lines, wandb's `Adding directory to artifact`. transformers reads the progress-bar switch
when it is imported, so call this first thing in an entry point.
"""

from __future__ import annotations

import logging
import os

NOISY_LOGGERS = ("wandb", "sentence_transformers", "transformers", "huggingface_hub", "matplotlib", "PIL", "urllib3")


def quiet_third_party(verbose: bool = False) -> None:
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # hub downloads and transformers' loading bar
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    import sys

    if "transformers" in sys.modules:  # imported already: its switch was read, flip it
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
