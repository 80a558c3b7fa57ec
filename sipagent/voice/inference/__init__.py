"""Where the models run and how jobs reach them: a process of their own (the default) or threads.

:func:`start_inference` loads the configured models (seconds) and returns the running service;
conversations submit :mod:`sipagent.voice.jobs` to it and get their results on the event loop.
"""

from __future__ import annotations

from .loading import InferenceConfig, LoadedModels, ModelLoadError, load_models
from .local import LocalInference
from .process import ProcessInference
from .service import Deliver, InferenceService, Ticket

Inference = LocalInference | ProcessInference


async def start_inference(config: InferenceConfig) -> Inference:
    """Load the models where ``config.where`` says and serve them (raises :class:`ModelLoadError`)."""
    if config.where == "process":
        return await ProcessInference.start(config)
    return await LocalInference.load(config)


__all__ = [
    "Deliver",
    "Inference",
    "InferenceConfig",
    "InferenceService",
    "LoadedModels",
    "LocalInference",
    "ModelLoadError",
    "ProcessInference",
    "Ticket",
    "load_models",
    "start_inference",
]
