"""``sipagent replay``: feed a capture's caller audio through the media engine and report what it heard."""
