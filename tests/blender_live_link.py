"""Run by tests/test_blender_addon.py in the bpy venv (.venv-blender), never imported by pytest.

Installs the add-on from its zip, makes a VRM humanoid armature with the VRM add-on, connects to a
live server through the add-on's Connect operator, records while calling the add-on's timer function
(timers do not fire in bpy module mode), and writes what it saw as JSON. Always ends with os._exit:
bpy hangs at interpreter exit once the VRM add-on has registered its timers.

usage: python blender_live_link.py CONFIG.json   (keys: zip, url or vmc_port, frames, out, render)
"""

import json
import os
import sys
import time
import traceback


def bone_directions(bpy, ob, names):
    """World-space unit head->tail direction of each pose bone, from the evaluated depsgraph."""
    dg = bpy.context.evaluated_depsgraph_get()
    ev = ob.evaluated_get(dg)
    out = {}
    for name in names:
        pb = ev.pose.bones[name]
        d = (ob.matrix_world @ pb.tail) - (ob.matrix_world @ pb.head)
        out[name] = list(d.normalized())
    return out


class LayoutRecorder:
    """Stands in for bpy's UILayout (none exists without a window) to run the panel's draw code.
    It checks that every property the panel shows exists, and records labels and operators."""

    def __init__(self, log):
        self.log = log

    def prop(self, data, name, **kwargs):
        assert hasattr(data, name), f"panel shows a missing property {name!r}"
        self.log.append(f"prop:{name}")

    def label(self, text="", **kwargs):
        self.log.append(f"label:{text}")

    def operator(self, idname, text="", **kwargs):
        self.log.append(f"operator:{idname}:{text}")
        return type("OperatorProps", (), {})()

    def row(self, **kwargs):
        return self


def draw_panel(module, bpy):
    log = []
    panel = type("PanelStandIn", (), {"layout": LayoutRecorder(log)})()
    module.AVATARBRIDGE_PT_panel.draw(panel, bpy.context)
    return log


def build_rig(bpy, rig):
    """An armature from {"bones": [[name, parent, head, tail, roll], ...]} (armature space)."""
    data = bpy.data.armatures.new("rig")
    ob = bpy.data.objects.new("rig", data)
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    for name, parent, head, tail, roll in rig["bones"]:
        eb = data.edit_bones.new(name)
        eb.head, eb.tail, eb.roll = head, tail, roll
        if parent:
            eb.parent = data.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    return ob


def add_box_mesh(bpy, ob):
    """A box per deforming bone, parented to the bone, so a render shows the rig (armatures don't render)."""
    import bmesh
    from mathutils import Matrix

    mat = bpy.data.materials.new("avatar")
    mat.diffuse_color = (0.35, 0.55, 0.9, 1.0)
    for bone in ob.data.bones:
        length = bone.length
        if length < 0.04 or any(k in bone.name for k in ("thumb", "index", "middle", "ring", "little", "eye")):
            continue
        me = bpy.data.meshes.new(f"box_{bone.name}")
        bm = bmesh.new()
        bmesh.ops.create_cube(bm, size=1.0)
        w = 0.12 if bone.name in ("hips", "spine", "chest", "upper_chest") else 0.07
        bmesh.ops.scale(bm, vec=(w, length, w), verts=bm.verts)
        bmesh.ops.translate(bm, vec=(0, length / 2, 0), verts=bm.verts)
        bm.to_mesh(me)
        bm.free()
        me.materials.append(mat)
        box = bpy.data.objects.new(f"box_{bone.name}", me)
        bpy.context.scene.collection.objects.link(box)
        box.parent = ob
        box.parent_type = "BONE"
        box.parent_bone = bone.name
        # Bone parenting puts the child at the bone's tail; move it back to the head.
        box.matrix_parent_inverse = Matrix.Translation((0, -length, 0))


def render(bpy, path):
    from mathutils import Vector

    scene = bpy.context.scene
    cam_data = bpy.data.cameras.new("cam")
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (1.8, -4.6, 1.3)
    direction = Vector((0, 0, 0.8)) - cam.location
    cam.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    light = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    light.rotation_euler = (0.6, 0.2, 0.4)
    scene.collection.objects.link(light)
    world = bpy.data.worlds.new("bg")
    world.color = (0.11, 0.13, 0.16)
    scene.world = world
    bpy.ops.mesh.primitive_plane_add(size=3.0, location=(0, 0, 0))
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def main(config):
    result = {"ok": False}
    t0 = time.monotonic()
    import bpy  # first: it puts Blender's own modules (addon_utils, ...) on the path
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if "custom_rig" in config:
        ob = build_rig(bpy, config["custom_rig"])
    else:
        addon_utils.enable("io_scene_vrm", default_set=True)
        # fast_armature: skip the VRM add-on's humanoid assignment (seconds on a busy machine); the
        # add-on then maps by bone names instead of by the assignment.
        fast = bool(config.get("fast_armature"))
        assert bpy.ops.icyp.make_basic_armature(skip_heavy_armature_setup=fast) == {"FINISHED"}
        ob = bpy.context.object
    result["t_setup"] = time.monotonic() - t0

    # Install exactly what users install: the zip.
    assert bpy.ops.preferences.addon_install(filepath=config["zip"], overwrite=True) == {"FINISHED"}
    module = addon_utils.enable("avatar_bridge_blender", default_set=True)
    assert module is not None, "the add-on did not enable"
    result["installed_from"] = module.__file__

    if config.get("url") == "stdin":
        # The caller starts its server only now (Blender's setup is slow on a busy machine): say so and
        # read the address it then gives.
        print("READY", flush=True)
        config["url"] = sys.stdin.readline().strip()

    settings = bpy.context.scene.avatar_bridge

    def refused(operator, **kwargs):
        """The error an operator reports (bpy.ops raises it in background mode), or None."""
        try:
            return None if operator(**kwargs) == {"FINISHED"} else "cancelled"
        except RuntimeError as exc:
            return str(exc)

    result["panel_idle"] = draw_panel(module, bpy)
    result["refusals"] = {
        "connect_without_armature": refused(bpy.ops.avatar_bridge.connect),
        "record_before_connect": refused(bpy.ops.avatar_bridge.record, start=True),
    }
    settings.armature = ob
    settings.bone_map = "CUSTOM"
    settings.custom_map_path = os.path.join(os.getcwd(), "no-such-map.json")
    result["refusals"]["missing_custom_map"] = refused(bpy.ops.avatar_bridge.connect)
    settings.bone_map = config.get("bone_map", "VRM")
    settings.facing = config.get("facing", "NEG_Y")
    if "vmc_port" in config:
        settings.source = "VMC"
        settings.vmc_port = config["vmc_port"]
    else:
        settings.url = config["url"]
    assert bpy.ops.avatar_bridge.connect() == {"FINISHED"}
    session = module.current_session()
    assert bpy.app.timers.is_registered(module.timer_callback)
    assert bpy.ops.avatar_bridge.record(start=True) == {"FINISHED"}
    if "url" in config:  # the WebSocket is two-way: the panel's Calibrate reaches the server
        deadline = time.monotonic() + 10
        while session.receiver.slot.status != "connected" and time.monotonic() < deadline:
            time.sleep(0.02)
        result["calibrate"] = refused(bpy.ops.avatar_bridge.calibrate)

    wanted = config["frames"]
    deadline = time.monotonic() + config.get("timeout", 30)
    samples = []  # (seq, directions) after each of the last applications: a test matches any it knows
    apply_ms = []  # duration of timer calls that applied a frame (the cost Blender's UI thread pays)
    while (session.driver is None or session.driver.frames_applied < wanted) and time.monotonic() < deadline:
        before = session.driver.frames_applied if session.driver else 0
        t_call = time.perf_counter()
        module.timer_callback()
        if session.driver is not None and session.driver.frames_applied > before:
            apply_ms.append((time.perf_counter() - t_call) * 1000.0)
        driver = session.driver
        if driver is not None and driver.frames_applied > wanted - 8 and (not samples or samples[-1]["seq"] != driver.last_seq):
            mapped = {vrm: arm for arm, vrm in driver.vrm_of.items()}
            samples.append({"seq": driver.last_seq, "live": bone_directions(bpy, ob, mapped.values())})
        time.sleep(1 / 60)
    driver = session.driver
    assert driver is not None and driver.frames_applied >= wanted, (
        f"applied {driver.frames_applied if driver else 0} frames in time; receiver: "
        f"{session.receiver.slot.status} {session.receiver.slot.error}")
    result["samples"] = samples
    result["apply_ms"] = apply_ms
    mapped = dict(sorted((vrm, arm) for arm, vrm in driver.vrm_of.items()))
    result["map"] = mapped
    result["seq"] = driver.last_seq
    result["live"] = bone_directions(bpy, ob, mapped.values())
    result["hips_head"] = list(ob.matrix_world @ ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).pose.bones[mapped["hips"]].head)
    result["rest"] = {name: list((ob.data.bones[name].tail_local - ob.data.bones[name].head_local).normalized())
                      for name in mapped.values()}
    result["hips_rest_head"] = list(ob.data.bones[mapped["hips"]].head_local)
    result["frames_applied"] = driver.frames_applied
    result["panel_live"] = draw_panel(module, bpy)
    result["frames_recorded"] = session.frames_recorded
    assert bpy.ops.avatar_bridge.record(start=False) == {"FINISHED"}
    assert bpy.ops.avatar_bridge.disconnect() == {"FINISHED"}
    assert not bpy.app.timers.is_registered(module.timer_callback)

    action = ob.animation_data.action if ob.animation_data else None
    result["action"] = action.name if action else None
    if action is not None:
        fcurves = list(action.fcurves)
        result["fcurves"] = len(fcurves)
        result["keyed_bones"] = sorted({fc.data_path.split('"')[1] for fc in fcurves if '"' in fc.data_path})
        frames = sorted({int(k.co[0]) for fc in fcurves for k in fc.keyframe_points})
        result["keyframes"] = frames
        # Play the recording back at its last key: the pose must be the last one applied live.
        bpy.context.scene.frame_set(frames[-1])
        result["replayed"] = bone_directions(bpy, ob, mapped.values())
    if config.get("render"):
        add_box_mesh(bpy, ob)
        render(bpy, config["render"])
        result["rendered"] = os.path.exists(config["render"])
    result["ok"] = True
    result["t_total"] = time.monotonic() - t0
    return result


if __name__ == "__main__":
    cfg = json.load(open(sys.argv[1]))
    code = 1
    try:
        res = main(cfg)
        code = 0
    except Exception:  # report, then exit without running bpy's hanging exit handlers
        res = {"ok": False, "error": traceback.format_exc()}
    with open(cfg["out"], "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
