"""Keys the caller presses (RFC 4733 events), sans-IO: a keypad menu that acts without the model, and
entries collected for it.

Rules
=====
* A key pressed while no entry is being collected, that the menu names (``keys``), is an action at
  once: ``end_call``, ``transfer:<target>``, ``say:<text>``.
* Any other key starts (or continues) an entry. ``#`` ends it at once; otherwise it ends
  ``timeout_s`` after its last key. The entry reaches the model as the caller's turn.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class KeyAction:
    """A menu key's action: ``end_call``, ``transfer:<target>`` or ``say:<text>``."""

    key: str
    action: str


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """Keys collected into one entry (``#`` included when it ended the entry)."""

    keys: str

    def as_turn(self) -> str:
        """The entry as the caller's words to the model."""
        return f"The caller pressed {' '.join(self.keys)}."


class Keypad:
    """Menu keys and entries (see the module docstring)."""

    def __init__(self, menu: dict[str, str], timeout_s: float) -> None:
        self.menu = menu
        self.timeout_s = timeout_s
        self._keys = ""
        #: When the entry being collected ends without another key (None: none is).
        self.deadline: float | None = None

    def press(self, key: str, now: float) -> KeyAction | KeyEntry | None:
        """One key at ``now``: an action, a finished entry, or None (collecting)."""
        if key not in DIGITS:
            return None
        if not self._keys and key in self.menu:
            return KeyAction(key, self.menu[key])
        self._keys += key
        if key == "#":
            return self._take()
        self.deadline = now + self.timeout_s
        return None

    def expire(self, now: float) -> KeyEntry | None:
        """The entry, if its time is up at ``now``."""
        if self.deadline is not None and now >= self.deadline:
            return self._take()
        return None

    def _take(self) -> KeyEntry:
        entry, self._keys, self.deadline = KeyEntry(self._keys), "", None
        return entry


__all__ = ["DIGITS", "KeyAction", "KeyEntry", "Keypad"]
