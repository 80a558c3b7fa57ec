"""``python -m sipagent``."""

from .cli import main

main()
