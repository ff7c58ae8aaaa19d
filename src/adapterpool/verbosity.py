"""What the command lines turn down in the libraries below them, once, at start-up.

A library must not change process-wide logging or warning filters when it is imported (a user's
own program decides those), so these calls happen only in the ``adapterpool`` commands.
"""

from __future__ import annotations

import warnings


def quiet_third_party() -> None:
    """transformers' info logs and download bars off; two known-harmless warnings hidden."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)
    # adapterpool passes the base model explicitly and records its canonical id itself.
    warnings.filterwarnings("ignore", message=".*base_model_name_or_path. was renamed.*")
