"""asyncio adapters: the only place with sockets and tasks (SIP transports, media sockets, clock)."""

from .._compiled import drop_stale_builds

# Before media.py is looked up: it is compiled, and a stale build must go before Python loads it.
drop_stale_builds()
