"""The language model the ``[llm]`` section names: the one place that knows every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .llm import ChatModel

if TYPE_CHECKING:
    from ..config import LlmSettings


def chat_model_from_settings(settings: LlmSettings) -> ChatModel:
    """The backend the ``[llm]`` section names, loaded."""
    if settings.backend == "openai":
        from .llm_openai import OpenAIChat

        return OpenAIChat.from_settings(settings)
    from .llm_llama import LlamaCppChat

    return LlamaCppChat.from_settings(settings)


__all__ = ["chat_model_from_settings"]
