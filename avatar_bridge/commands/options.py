"""Command-line options shared by several commands, and how they override the config.

Every flag maps to one config key (named in its help text); the config file sets the defaults and the
flags override them, then the whole config is validated so an error names the key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..capture import parse_size
from ..config import DEFAULT_PRESET, AppConfig, ConfigError, VmcConfig, WebSocketConfig, load_config
from ..files import check_writable, refuse_existing
from ..vmc import DEFAULT_PORT, parse_target


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``bench``: config, source, models."""
    parser.add_argument("--config", metavar="NAME|PATH", help="preset name (cpu-fast, cpu-balanced, gpu-accurate, default) or a TOML file")
    parser.add_argument("--source", help="camera index (0), /dev/videoN, video file, image folder, synthetic, FILE.bvh, an AMP humanoid FILE.npy or a DeepMimic humanoid3d FILE.txt (mocap) or FILE.abrec "
                        "(source.source; default: the preset's, 'synthetic' in the default preset, so no camera is opened unless you ask)")
    parser.add_argument("--model", help="pose model: .onnx file, .pth checkpoint or registry name (pose.model)")
    parser.add_argument("--detector", help="none, yolox-nano, light-person-detector, yolox:PATH.onnx, "
                        "fasterrcnn_resnet50_fpn, fasterrcnn_mobilenet_v3_large_fpn or ssdlite (detector.name)")
    parser.add_argument("--detector-dir", metavar="DIR", help="folder with the named ONNX detectors (detector.model_dir)")
    parser.add_argument("--device", help="cpu or cuda (pose.device)")
    parser.add_argument("--threads", type=int,
                        help="onnxruntime/torch threads for the pose model (pose.threads; used as given, no auto_threads check)")
    parser.add_argument("--resize", metavar="WxH", help="resize decoded images, e.g. 640x360 (source.resize)")
    parser.add_argument("--rotate", type=int, choices=(0, 90, 180, 270),
                        help="turn every frame this many degrees clockwise before detection (source.rotate)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="mirror every frame left-right before detection (source.flip)")
    parser.add_argument("--people", choices=("all", "driver"), help="estimate every person or only the driving one")
    parser.add_argument("--every", type=int, metavar="N", help="run the detector at least every N frames")
    parser.add_argument("--max-people", type=int, metavar="N",
                        help="track at most N people, the largest and most confident (detector.max_people)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=None,
                      help="pace files at their frame rate, like a camera: frames the CPU cannot keep up with are dropped (the default)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="process every frame of a file as fast as possible (a preview: VMC and WebSocket run on the wall "
                           "clock); refused with --record/--bvh, which would be stretched in time: use avatar-bridge convert")
    parser.add_argument("--loop", action="store_true", default=None, help="restart files at their end")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    rig = parser.add_argument_group("retargeting")
    rig.add_argument("--upper-body", dest="upper_body", action="store_true", default=None,
                     help="lock the legs at rest, for seated streamers (retarget.upper_body)")
    mirror = rig.add_mutually_exclusive_group()
    mirror.add_argument("--mirror", dest="mirror", action="store_true", default=None,
                        help="the avatar moves like your mirror image (retarget.mirror, the default)")
    mirror.add_argument("--no-mirror", dest="mirror", action="store_false", help="the avatar's left arm is your left arm")
    rig.add_argument("--calibration", metavar="FILE.json",
                     help="load the body calibration from FILE if it exists, save it there after calibrating")


def apply_source_arguments(args: argparse.Namespace, config: AppConfig) -> AppConfig:
    """CLI overrides on top of the config file; validated again so the errors name the key."""
    overrides = {
        ("source", "source"): args.source,
        ("pose", "model"): args.model,
        ("detector", "name"): args.detector,
        ("detector", "model_dir"): args.detector_dir,
        ("pose", "device"): args.device,
        ("pose", "threads"): args.threads,
        ("source", "resize"): args.resize,
        ("source", "rotate"): getattr(args, "rotate", None),
        ("source", "flip"): getattr(args, "flip", None),
        ("detector", "max_people"): getattr(args, "max_people", None),
        ("detector", "people"): args.people,
        ("detector", "every_n_frames"): args.every,
        ("source", "realtime"): args.realtime,
        ("source", "loop"): args.loop,
        ("source", "duration"): args.duration,
        ("retarget", "upper_body"): args.upper_body,
        ("retarget", "mirror"): args.mirror,
        ("retarget", "calibration_file"): args.calibration,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.threads is not None:
        config.pose.auto_threads = False  # --threads N is the user's choice: used as given
    config.validate()
    check_calibration_file(config)
    parse_size(config.source.resize)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames {args.max_frames} must be at least 1")
    return config


def add_vmc_arguments(parser: argparse.ArgumentParser) -> None:
    """``--vmc HOST:PORT`` (repeatable) and ``--no-vmc``."""
    group = parser.add_argument_group("VMC output (OSC over UDP)")
    group.add_argument("--vmc", action="append", metavar="HOST:PORT", default=None,
                       help=f"send VMC to this receiver (repeatable; a bare PORT means 127.0.0.1:PORT; "
                            f"default 127.0.0.1:{DEFAULT_PORT})")
    group.add_argument("--no-vmc", action="store_true", help="do not send VMC")
    group.add_argument("--vmc-avatar", metavar="FILE.vrm",
                       help="the receiver's avatar: hips sent at its hip height, its bone offsets (vmc.avatar)")
    group.add_argument("--vmc-hips", choices=("absolute", "scaled", "offset"),
                       help="how the Hips position is sent (vmc.hips, default scaled)")


def apply_vmc_arguments(args: argparse.Namespace, config: VmcConfig) -> None:
    """Copy the VMC command-line options into ``config`` (validated on use)."""
    targets = getattr(args, "vmc", None)
    if getattr(args, "vmc_avatar", None):
        config.avatar = args.vmc_avatar
    if getattr(args, "vmc_hips", None):
        config.hips = args.vmc_hips
    if getattr(args, "no_vmc", False):
        if targets:
            raise ValueError("--vmc and --no-vmc contradict each other: pass one of them")
        config.enabled = False
    elif targets:
        for spec in targets:
            parse_target(spec)
        config.targets = list(targets)
        config.enabled = True


def add_ws_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ws-host``, ``--ws-port``, ``--ws-token``, ``--no-ws``."""
    group = parser.add_argument_group("WebSocket output and web viewer")
    group.add_argument("--ws-host", metavar="HOST", default=None, help="address to listen on (default 127.0.0.1; anything else needs --ws-token)")
    group.add_argument("--ws-port", metavar="PORT", type=int, default=None, help="port (default 8765; 0 = any free port)")
    group.add_argument("--ws-token", metavar="TOKEN", default=None, help="clients must present this token (required off loopback)")
    group.add_argument("--no-ws", action="store_true", help="do not start the WebSocket server")


def apply_ws_arguments(args: argparse.Namespace, config: WebSocketConfig) -> None:
    """Copy the WebSocket command-line options into ``config`` (checked again in ``start``)."""
    if getattr(args, "ws_host", None) is not None:
        config.host = args.ws_host
    if getattr(args, "ws_port", None) is not None:
        if not 0 <= args.ws_port <= 65535:
            raise ValueError(f"--ws-port {args.ws_port} is out of range: use 0 to 65535")
        config.port = args.ws_port
    if getattr(args, "ws_token", None) is not None:
        config.token = args.ws_token
    if getattr(args, "no_ws", False):
        config.enabled = False


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``run`` (``record`` adds ``-o``)."""
    add_source_arguments(parser)
    add_vmc_arguments(parser)
    add_ws_arguments(parser)
    out = parser.add_argument_group("preview and files")
    out.add_argument("--headless", action="store_true", help="no preview window")
    out.add_argument("--save-overlay", metavar="OUT.mp4", help="write the preview (skeleton overlay) to a video file")
    out.add_argument("--record", metavar="FILE.abrec", help="record the take")
    out.add_argument("--bvh", metavar="OUT.bvh", help="write the driving person's motion as BVH at the end")
    out.add_argument("--overwrite", action="store_true", default=None,
                     help="replace an existing recording (--record, or -o of record), --bvh file or --save-overlay video instead of refusing (record.overwrite)")
    out.add_argument("--quiet", action="store_true", help="no status line")


def build_config(args: argparse.Namespace) -> AppConfig:
    """The preset (``--config``, else the default one) with every command-line override applied."""
    config = load_config(args.config or DEFAULT_PRESET)
    apply_source_arguments(args, config)
    apply_vmc_arguments(args, config.vmc)
    apply_ws_arguments(args, config.websocket)
    overlay = getattr(args, "save_overlay", None)
    if overlay and not Path(overlay).expanduser().resolve().parent.is_dir():
        raise FileNotFoundError(f"folder for --save-overlay {overlay} does not exist: create it or choose another path")
    if overlay:
        refuse_existing(overlay, bool(getattr(args, "overwrite", False)), "overlay video")
    if getattr(args, "record", None):
        config.record.path = args.record
    if getattr(args, "bvh", None):
        config.record.bvh = args.bvh
    if getattr(args, "overwrite", None) is not None:
        config.record.overwrite = args.overwrite
    config.validate()
    check_calibration_file(config)
    return config


def refuse_time_stretched_files(config: AppConfig) -> None:
    """``--fast`` (source.realtime = false) with a recording or BVH is refused: the outputs run on the
    wall clock while frames arrive as fast as the CPU allows, so the files would hold motion stretched
    or squeezed in time. ``convert`` is the route that writes every frame in video time."""
    if not config.source.realtime and (config.record.path or config.record.bvh):
        raise ValueError(
            "--fast with --record/-o/--bvh would write motion stretched in time (the outputs run on the wall clock): "
            "to turn every frame of a file into motion use avatar-bridge convert SOURCE -o OUT.bvh (or .abrec, .jsonl); "
            "without --fast, files are paced at their own rate")



def check_calibration_file(config: AppConfig) -> None:
    """Read ``--calibration FILE`` now if it exists, not when the first person appears (a bad file
    used to stop the run then): ConfigError with the loader's one-line message. A file still to be
    written needs a folder that exists and can be written (found by a new user: the calibration was
    lost with a warning after the run). The path is the retargeter's own (``calibration_path``)."""
    from ..retarget import Calibration

    path = config.retarget.calibration_path()
    if path is None:
        return
    if path.is_file():
        try:
            Calibration.load(path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return  # read, and rewritten only on a recalibration (a read-only shared file still loads)
    try:
        check_writable(path, "calibration file", "create it, make it writable or change --calibration")
    except OSError as exc:
        raise ConfigError(str(exc)) from None
