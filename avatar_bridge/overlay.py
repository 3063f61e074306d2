"""The preview overlay: skeletons, track ids and a status text drawn onto a frame (run, convert)."""

from __future__ import annotations

import cv2
import numpy as np

from .keypoints import SKELETON_EDGES
from .types import Pose2D


def draw_overlay(canvas: np.ndarray, people: list[Pose2D], driver: int | None, text: str) -> np.ndarray:
    """Skeletons, track ids (the driver in green) and a status text drawn onto ``canvas`` in place."""
    scale = max(canvas.shape[0] / 720.0, 0.5)
    thick = max(int(round(2 * scale)), 1)
    for person in people:
        color = (80, 220, 80) if person.track_id == driver else (60, 160, 255)
        kp = person.keypoints
        ok = person.scores > 0.2
        for a, b in SKELETON_EDGES:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), color, thick, cv2.LINE_AA)
        for x, y in kp[ok]:
            cv2.circle(canvas, (int(x), int(y)), thick + 1, color, -1, cv2.LINE_AA)
        if ok.any():
            top = kp[ok][np.argmin(kp[ok][:, 1])]
            label = f"#{person.track_id}" + (" driver" if person.track_id == driver else "")
            cv2.putText(canvas, label, (int(top[0]), int(top[1] - 12 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.7 * scale, color, thick, cv2.LINE_AA)
    cv2.putText(canvas, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255),
                thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), thick, cv2.LINE_AA)
    return canvas
