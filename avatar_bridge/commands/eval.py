"""``avatar-bridge eval`` (TEMP: shell still in evaluate)."""

from ..evaluate import configure_parser, run_command  # noqa: F401
