"""Make small test avatars with the VRM add-on (run in .venv-blender; never imported by pytest).

usage: python blender_make_vrm.py OUT_DIR  ->  OUT_DIR/avatar-vrm1.vrm and OUT_DIR/avatar-vrm0.vrm

Each is the VRM add-on's basic humanoid armature with one skinned box per bone (our own content,
made here, so no third-party model is needed). Ends with os._exit: bpy hangs at interpreter exit
once the VRM add-on is enabled.
"""

import os
import sys
import traceback


def skinned_boxes(bpy, ob):
    import bmesh

    mat = bpy.data.materials.new("skin")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (0.85, 0.55, 0.35, 1.0)
    bsdf.inputs["Metallic"].default_value = 0.0  # glTF's default is metallic: renders black in three.js
    me = bpy.data.meshes.new("body")
    bm = bmesh.new()
    groups = []
    for bone in ob.data.bones:
        if bone.length < 0.03:
            continue
        head, tail = bone.head_local, bone.tail_local
        axis = (tail - head).normalized()
        w = 0.05 if bone.length > 0.1 else 0.025
        ret = bmesh.ops.create_cube(bm, size=1.0)
        verts = ret["verts"]
        rot = axis.to_track_quat("Y", "Z").to_matrix().to_4x4()
        for v in verts:
            v.co = (rot @ (v.co * __import__("mathutils").Vector((w, bone.length, w))))
            v.co += head + (tail - head) * 0.5
        groups.append((bone.name, [v for v in verts]))
    bm.verts.index_update()
    index_groups = [(name, [v.index for v in verts]) for name, verts in groups]
    bm.to_mesh(me)
    bm.free()
    me.materials.append(mat)
    body = bpy.data.objects.new("body", me)
    bpy.context.scene.collection.objects.link(body)
    for name, indices in index_groups:
        vg = body.vertex_groups.new(name=name)
        vg.add(indices, 1.0, "REPLACE")
    mod = body.modifiers.new("Armature", "ARMATURE")
    mod.object = ob
    body.parent = ob


def main(out_dir):
    import bpy  # first: it puts Blender's own modules on the path
    import addon_utils

    for version in ("1", "0"):
        bpy.ops.wm.read_factory_settings(use_empty=True)  # also disables add-ons: enable after it
        addon_utils.enable("io_scene_vrm", default_set=True)
        assert bpy.ops.icyp.make_basic_armature() == {"FINISHED"}
        ob = bpy.context.object
        ext = ob.data.vrm_addon_extension
        if version == "0":
            ext.spec_version = "0.0"
            bpy.ops.vrm.assign_vrm0_humanoid_human_bones_automatically(armature_object_name=ob.name)
            ext.vrm0.meta.title = "avatar-bridge test avatar (VRM 0.x)"
        else:
            ext.vrm1.meta.vrm_name = "avatar-bridge test avatar (VRM 1.0)"
        skinned_boxes(bpy, ob)
        path = os.path.join(out_dir, f"avatar-vrm{version}.vrm")
        result = bpy.ops.export_scene.vrm(filepath=path, ignore_warning=True, armature_object_name=ob.name)
        assert result == {"FINISHED"} and os.path.getsize(path) > 1000, (version, result)
        print(path, os.path.getsize(path))


if __name__ == "__main__":
    code = 1
    try:
        main(sys.argv[1])
        code = 0
    except Exception:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
