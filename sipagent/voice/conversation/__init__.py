"""The conversation engine: one call's turn-taking, replies, barge-in and history, sans-IO.

:class:`Conversation` takes the call's ticks (:class:`Frame`) and the models' results
(:mod:`sipagent.voice.jobs`) with their times, and returns commands; see :mod:`.engine`.
"""

from .commands import (
    CancelJob,
    Command,
    EndCall,
    FlushOutput,
    Frame,
    PlayFrames,
    RunTool,
    SendDigits,
    TransferCall,
    TurnFinished,
)
from .config import ConversationConfig
from .engine import Conversation
from .record import Outcome, TurnRecord
from .reply import ReplyState, ReplyStateError

__all__ = [
    "CancelJob",
    "Command",
    "Conversation",
    "ConversationConfig",
    "EndCall",
    "FlushOutput",
    "Frame",
    "Outcome",
    "PlayFrames",
    "ReplyState",
    "ReplyStateError",
    "RunTool",
    "SendDigits",
    "TransferCall",
    "TurnFinished",
    "TurnRecord",
]
