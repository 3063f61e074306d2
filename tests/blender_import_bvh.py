"""Run by tests/test_blender_bvh.py inside the bpy venv: import a BVH with Blender's own importer and
print the world-space head of every bone at the requested frames as one JSON line.

Usage: python blender_import_bvh.py FILE.bvh OUT.json [--user-axes] FRAME [FRAME ...]
Frames are BVH file frame numbers (0 = first MOTION line). Without --user-axes there is no axis
conversion (Blender coordinates = file coordinates); with it the importer's defaults a user gets
(Forward -Z, Up Y, scale 0.01 for a cm file). Exits with os._exit because bpy can hang
at interpreter exit (see ../shared/research/client-testing.md).
"""

import json
import os
import sys


def main() -> int:
    import bpy

    path, out_path = sys.argv[1], sys.argv[2]
    user_axes = "--user-axes" in sys.argv[3:]
    frames = [int(f) for f in sys.argv[3:] if f != "--user-axes"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if user_axes:
        axes = {"axis_forward": "-Z", "axis_up": "Y", "global_scale": 0.01}
    else:  # axis_forward="Y", axis_up="Z": no axis conversion, Blender's world coordinates are the file's
        axes = {"axis_forward": "Y", "axis_up": "Z", "global_scale": 1.0}
    result = bpy.ops.import_anim.bvh(
        filepath=path, target="ARMATURE", frame_start=1, use_fps_scale=False,
        update_scene_fps=False, update_scene_duration=True, rotate_mode="NATIVE", **axes,
    )
    if result != {"FINISHED"}:
        raise RuntimeError(f"import_anim.bvh returned {result}")
    armature = next(ob for ob in bpy.context.scene.objects if ob.type == "ARMATURE")
    scene = bpy.context.scene
    heads = {}
    for frame in frames:
        scene.frame_set(frame + 1)  # frame_start=1: file frame 0 lands on Blender frame 1
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = armature.evaluated_get(depsgraph)
        heads[str(frame)] = {
            bone.name: list(evaluated.matrix_world @ bone.head) for bone in evaluated.pose.bones
        }
        heads[f"{frame}_tails"] = {
            bone.name: list(evaluated.matrix_world @ bone.tail) for bone in evaluated.pose.bones
        }
    info = {
        "blender": bpy.app.version_string,
        "bones": [b.name for b in armature.data.bones],
        "frame_end": scene.frame_end,
        "heads": heads,
    }
    with open(out_path, "w") as f:
        json.dump(info, f)
    return 0


if __name__ == "__main__":
    code = 1
    try:
        code = main()
    except BaseException as exc:  # report, then leave through os._exit below
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
