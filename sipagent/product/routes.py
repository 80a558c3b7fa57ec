"""Routes: one agent per dialled number.

A call is routed by the number it was made to (the Request-URI's user part, else the To URI's),
compared in E.164; a number no route names takes the default route (the ``[[routes]]`` table
without ``number``, else the settings' own greeting and instructions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .numbers import caller_number


@dataclass(frozen=True)
class Route:
    """What the agent is and says on one number."""

    name: str
    #: The dialled number (E.164); None: the default route.
    number: str | None = None
    greeting: str | None = None
    #: The agent's instructions (system prompt); None: the LLM settings' own.
    instructions: str | None = None
    #: Spoken before anything else (an AI disclosure); None: nothing.
    disclosure: str | None = None
    language: str | None = None
    #: A Piper voice's path other than the default one (loaded at start-up); None: the default.
    voice: str | None = None
    #: Record this route's calls (one stereo WAV each); None: as ``[recording] enabled`` says.
    record: bool | None = None
    #: ``per-caller``: the agent starts with the caller's earlier calls on this route (memory.py).
    memory: Literal["per-call", "per-caller"] = "per-call"
    #: With ``per-caller``: at most this many earlier turns, from calls begun in the last ``memory_days``.
    memory_turns: int = 6
    memory_days: int = 30


class RouteTable:
    """Finds the route of a dialled number."""

    def __init__(self, routes: list[Route], default: Route, *, default_country: str) -> None:
        self._by_number = {route.number: route for route in routes if route.number is not None}
        self.default = default
        self._country = default_country
        self._by_name = {route.name: route for route in [*routes, default]}

    def match(self, dialled: str | None) -> Route:
        """The route for a dialled number or URI user part (the default when none matches)."""
        number = caller_number(dialled, self._country) if dialled else None
        if number is not None and number in self._by_number:
            return self._by_number[number]
        return self.default

    def named(self, name: str) -> Route | None:
        """A route by its name or number (outbound.route)."""
        if name in self._by_name:
            return self._by_name[name]
        number = caller_number(name, self._country)
        return self._by_number.get(number) if number is not None else None

    def __len__(self) -> int:
        return len(self._by_number) + 1
