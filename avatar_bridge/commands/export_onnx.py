"""``avatar-bridge export_onnx`` (TEMP: shell still in export_onnx)."""

from ..export_onnx import configure_parser, run_command  # noqa: F401
