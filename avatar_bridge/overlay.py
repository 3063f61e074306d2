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
            draw_text_box(canvas, label, (int(top[0]), int(top[1] - 12 * scale)), color, bottom=True)
    if text:
        draw_text_box(canvas, text, (0, 0))
    return canvas


def draw_text_box(canvas: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int] = (255, 255, 255),
                  bottom: bool = False) -> None:
    """``text`` drawn once, in ``color`` on a dark box, readable at any image size.

    The font is 0.7 at 720 p, scaled with the image height but never below 0.5 (capitals about 11 px
    high), and wrapped at double spaces to fit the image width. ``origin`` is the box's top-left
    corner (bottom-left with ``bottom``), moved inside the image.
    """
    h, w = canvas.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.7 * h / 720.0, 0.5)
    thick = max(int(round(scale * 1.6)), 1)
    pad = max(int(round(6 * scale)), 3)
    lines: list[str] = []
    for part in [p.strip() for p in text.split("  ") if p.strip()]:
        joined = f"{lines[-1]}  {part}" if lines else part
        if lines and cv2.getTextSize(joined, font, scale, thick)[0][0] + 2 * pad <= w:
            lines[-1] = joined
        else:
            lines.append(part)
    if not lines:
        return
    sizes = [cv2.getTextSize(line, font, scale, thick) for line in lines]
    line_h = max(sz[1] + sz[0][1] for sz in sizes) + pad
    box_w = max(sz[0][0] for sz in sizes) + 2 * pad
    box_h = line_h * len(lines) + pad
    x = int(min(max(origin[0], 0), max(w - box_w, 0)))
    y = int(origin[1] - box_h if bottom else origin[1])
    y = int(min(max(y, 0), max(h - box_h, 0)))
    cv2.rectangle(canvas, (x, y), (x + box_w, y + box_h), (20, 20, 20), -1)
    for i, (line, (size, _baseline)) in enumerate(zip(lines, sizes)):
        cv2.putText(canvas, line, (x + pad, y + pad + i * line_h + size[1]), font, scale, color, thick, cv2.LINE_AA)
