#!/bin/bash
# The README's "Performance status" figures (issue #19), in one go, from the repository root:
#   bash benchmarks/perf_status.sh [OUT_DIR]
# Needs ../shared/fixtures and, for the MediaPipe comparison, .venv-mediapipe (see the README).
# Run it on a quiet machine: every benchmark prints the load average it ran under.
set -u
OUT=${1:-perf-status}
mkdir -p "$OUT"
F=../shared/fixtures
M="--model $F/models/ultralight-nano-simplepose/deploy.onnx --detector-dir $F/models"
AB=${AB:-.venv/bin/avatar-bridge}
PY=${PY:-.venv/bin/python}
WALK="$OUT/walk_640x360.mp4"
# the fixture video resized to 640x360 (INTER_AREA), as the README's one-person figures use it
$PY - "$F/video/two_people_walking_1080p.mp4" "$WALK" <<'PYEOF'
import sys, cv2
cap = cv2.VideoCapture(sys.argv[1])
out = cv2.VideoWriter(sys.argv[2], cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS), (640, 360))
while True:
    ok, image = cap.read()
    if not ok:
        break
    out.write(cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA))
out.release()
PYEOF
# overlapped (the default for a file read as fast as possible) and sequential (run's path for a camera),
# interleaved so that the machine's drift falls on both alike
for i in 1 2 3; do
  $AB bench --config cpu-fast --source "$WALK" $M --people driver --loop --max-frames 300 > "$OUT/fast$i.txt" 2>&1
  $AB bench --config cpu-fast --source "$WALK" $M --people driver --loop --max-frames 300 --sequential > "$OUT/fast_sequential$i.txt" 2>&1
done
$AB bench --config cpu-fast --source "$WALK" $M --people driver --loop --max-frames 200 --realtime > "$OUT/paced.txt" 2>&1
$AB bench --source $F/video/two_people_walking_1080p.mp4 $M --detector yolox-nano --threads 1 --loop --max-frames 200 > "$OUT/two_yolox.txt" 2>&1
$AB bench --source $F/video/two_people_walking_1080p.mp4 $M --detector yolox-nano --threads 1 --loop --max-frames 200 --sequential > "$OUT/two_yolox_sequential.txt" 2>&1
$AB bench --source $F/video/two_people_walking_1080p.mp4 $M --detector light-person-detector --threads 1 --loop --max-frames 200 > "$OUT/two_light.txt" 2>&1
$AB bench --config cpu-fast --source "$WALK" $M --people driver --compare-mediapipe > "$OUT/mediapipe.txt" 2>&1
$AB bench-pose --model $F/models/ultralight-nano-simplepose/deploy.onnx --threads 1 --repeats 40 --subpixel both > "$OUT/pose.txt" 2>&1
$PY benchmarks/ab_subpixel_loop.py "$WALK" --pairs 6 > "$OUT/ab_subpixel_loop.txt" 2>&1
$AB bench-convert --clip $F/video/two_people_walking_1080p.mp4 --model $F/models/ultralight-nano-simplepose/deploy.onnx \
    --detector-dir $F/models --resize 640x360 --repeats 3 > "$OUT/convert.txt" 2>&1
$PY benchmarks/bench_retarget_speed.py > "$OUT/retarget_speed.txt" 2>&1
$PY benchmarks/bench_stabilizer_speed.py > "$OUT/stabilizer_speed.txt" 2>&1
grep -E "pose updates/s|overhead|output clock|median|Retargeter|update|ratio|workers|deploy.onnx +(onnxruntime|ort-deconv)" "$OUT"/*.txt
