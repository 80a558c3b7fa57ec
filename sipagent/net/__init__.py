"""asyncio adapters: the only place with sockets and tasks (SIP transports, media sockets, clock)."""
