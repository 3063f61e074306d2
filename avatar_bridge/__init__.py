"""avatar-bridge: webcam motion capture for avatars.

Data flows through one module per stage:
capture -> detect -> track -> pose -> smooth -> retarget -> stream / record.
The small dataclasses passed between stages live in :mod:`avatar_bridge.types`.
"""

__version__ = "0.1.0"
