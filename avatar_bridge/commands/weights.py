"""``avatar-bridge weights`` (TEMP: shell still in weights)."""

from ..weights import configure_parser, run_command  # noqa: F401
