// Two avatars with one interface: apply(person), appliedRotation(bone), appliedHipsPosition().
//
// Stream convention (protocol v1): parent-local rotations of the normalized rig (identity = T-pose),
// right-handed, Y up, the avatar faces +Z, its left arm points to +X. That is exactly the frame of a
// three.js scene holding a VRM 1.0 model, so the procedural avatar and VRM 1.0 use it unchanged; a
// VRM 0.x model faces -Z before VRMUtils.rotateVRM0, which is a rotation by pi about Y:
// q -> (-x, y, -z, w), p -> (-x, y, -z). The same map converts back (it is its own inverse).

import * as THREE from 'three';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { VRMLoaderPlugin, VRMUtils } from '@pixiv/three-vrm';

const CENTER_COLOR = 0xb8c0cc;
const LEFT_COLOR = 0x4f8fe8; // the avatar's left (+X)
const RIGHT_COLOR = 0xe8894f;

function sideColor(name) {
  if (name.startsWith('left')) return LEFT_COLOR;
  if (name.startsWith('right')) return RIGHT_COLOR;
  return CENTER_COLOR;
}

function isFinger(name) {
  return /(Thumb|Index|Middle|Ring|Little)/.test(name);
}

/** Rotation of an absent bone: rest (identity), as RigPose defines it. */
const IDENTITY = [0, 0, 0, 1];

/**
 * A humanoid built from the hello message's bones: one Object3D per bone (offset = rest position in
 * the parent), a capsule from each bone to each child, so it needs no download and always matches
 * the server's skeleton.
 */
export class ProceduralAvatar {
  constructor(bones) {
    this.kind = 'procedural';
    this.name = 'default (procedural)';
    this.root = new THREE.Group();
    this.root.name = 'procedural-avatar';
    this.nodes = new Map();
    this.restHips = new THREE.Vector3();
    for (const bone of bones) {
      const node = new THREE.Object3D();
      node.name = bone.name;
      node.position.fromArray(bone.offset);
      const parent = bone.parent === null ? this.root : this.nodes.get(bone.parent);
      if (!parent) throw new Error(`hello: bone "${bone.name}" names parent "${bone.parent}" before it is defined`);
      parent.add(node);
      this.nodes.set(bone.name, node);
      if (bone.parent === null) this.restHips.fromArray(bone.offset);
    }
    for (const bone of bones) {
      if (bone.parent === null) continue;
      const parent = this.nodes.get(bone.parent);
      const offset = new THREE.Vector3().fromArray(bone.offset);
      const length = offset.length();
      if (length < 1e-4 || bone.name.endsWith('Eye') || bone.name === 'jaw') continue;
      const radius = isFinger(bone.name) ? 0.008 : bone.parent === 'hips' && bone.name.includes('Leg') ? 0.055 : 0.04;
      const geometry = new THREE.CapsuleGeometry(radius, Math.max(length - 2 * radius, 0.001), 4, 8);
      const material = new THREE.MeshStandardMaterial({ color: sideColor(bone.name), roughness: 0.6 });
      const limb = new THREE.Mesh(geometry, material);
      // Capsule axis is +Y; place it halfway to the child and point it at the child.
      limb.position.copy(offset).multiplyScalar(0.5);
      limb.quaternion.setFromUnitVectors(new THREE.Vector3(0, 1, 0), offset.clone().normalize());
      parent.add(limb);
    }
    const head = this.nodes.get('head');
    if (head) {
      const skull = new THREE.Mesh(
        new THREE.SphereGeometry(0.1, 16, 12),
        new THREE.MeshStandardMaterial({ color: CENTER_COLOR, roughness: 0.5 }),
      );
      skull.position.set(0, 0.1, 0);
      head.add(skull);
      // A nose shows which way the avatar faces (+Z at rest).
      const nose = new THREE.Mesh(
        new THREE.ConeGeometry(0.025, 0.06, 8),
        new THREE.MeshStandardMaterial({ color: 0xd05050 }),
      );
      nose.position.set(0, 0.1, 0.11);
      nose.rotation.x = Math.PI / 2;
      head.add(nose);
    }
  }

  apply(person) {
    const pose = person.pose || {};
    for (const [name, node] of this.nodes) {
      const rotation = pose[name]?.rotation || IDENTITY;
      node.quaternion.fromArray(rotation);
    }
    const hips = this.nodes.get('hips');
    const position = pose.hips?.position;
    if (hips) {
      if (position) hips.position.fromArray(position);
      else hips.position.copy(this.restHips);
    }
  }

  appliedRotation(bone) {
    const node = this.nodes.get(bone);
    return node ? node.quaternion.toArray() : null;
  }

  appliedHipsPosition() {
    const hips = this.nodes.get('hips');
    return hips ? hips.position.toArray() : null;
  }

  update() {}

  dispose() {
    this.root.traverse((o) => {
      o.geometry?.dispose();
      o.material?.dispose();
    });
  }
}

/** Loads a .vrm (VRM 0.x or 1.0) from an ArrayBuffer. */
export async function loadVrm(buffer, name, streamBones) {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  let gltf;
  try {
    gltf = await loader.parseAsync(buffer, '');
  } catch (err) {
    throw new Error(`${name}: not a readable glTF/VRM file (${err.message || err})`);
  }
  const vrm = gltf.userData.vrm;
  if (!vrm || !vrm.humanoid) {
    throw new Error(`${name}: the file has no VRM humanoid extension; export it as .vrm (VRM 0.x or 1.0)`);
  }
  return new VrmAvatar(vrm, name, streamBones);
}

export class VrmAvatar {
  constructor(vrm, name, streamBones) {
    this.vrm = vrm;
    this.isVrm0 = vrm.meta?.metaVersion === '0';
    this.kind = this.isVrm0 ? 'vrm0' : 'vrm1';
    this.name = `${vrm.meta?.name || vrm.meta?.title || name} (VRM ${this.isVrm0 ? '0.x' : '1.0'})`;
    VRMUtils.removeUnnecessaryVertices(vrm.scene);
    VRMUtils.combineSkeletons(vrm.scene);
    VRMUtils.rotateVRM0(vrm);
    vrm.scene.traverse((o) => {
      o.frustumCulled = false;
    });
    this.root = vrm.scene;
    this.sign = this.isVrm0 ? [-1, 1, -1] : [1, 1, 1];
    // The stream's hips position is absolute in the server's skeleton; the model may be taller or
    // shorter, so the displacement from rest is scaled by the ratio of hip heights.
    const hipsNode = vrm.humanoid.getNormalizedBoneNode('hips');
    this.restHipsVrm = hipsNode ? hipsNode.position.clone() : new THREE.Vector3();
    const streamHips = streamBones?.find((b) => b.parent === null);
    this.restHipsStream = new THREE.Vector3().fromArray(streamHips ? streamHips.offset : [0, 0.95, 0]);
    const worldHips = new THREE.Vector3();
    if (hipsNode) hipsNode.getWorldPosition(worldHips);
    this.hipScale = this.restHipsStream.y > 1e-3 && worldHips.y > 1e-3 ? worldHips.y / this.restHipsStream.y : 1;
    this.boneNames = Object.keys(vrm.humanoid.humanBones).filter((b) => vrm.humanoid.getNormalizedBoneNode(b));
    // A model may lack optional bones the stream drives (often upperChest). As the VRM spec asks, a
    // missing bone's rotation is folded into its children: each model bone gets the product of the
    // stream's local rotations from just below its nearest present ancestor down to itself.
    const parentOf = new Map((streamBones || []).map((b) => [b.name, b.parent]));
    const present = new Set(this.boneNames);
    this.chains = new Map();
    for (const name of this.boneNames) {
      const chain = [name];
      let p = parentOf.get(name);
      while (p != null && !present.has(p)) {
        chain.unshift(p);
        p = parentOf.get(p);
      }
      this.chains.set(name, chain);
    }
  }

  apply(person) {
    const pose = person.pose || {};
    const [sx, sy, sz] = this.sign;
    const humanoid = this.vrm.humanoid;
    const part = new THREE.Quaternion();
    for (const name of this.boneNames) {
      const node = humanoid.getNormalizedBoneNode(name);
      node.quaternion.identity();
      for (const bone of this.chains.get(name)) {
        const q = pose[bone]?.rotation;
        if (q) node.quaternion.multiply(part.fromArray(q));
      }
      const q = node.quaternion;
      q.set(q.x * sx, q.y * sy, q.z * sz, q.w);
    }
    const hips = humanoid.getNormalizedBoneNode('hips');
    const p = pose.hips?.position;
    if (hips) {
      hips.position.copy(this.restHipsVrm);
      if (p) {
        const d = new THREE.Vector3().fromArray(p).sub(this.restHipsStream).multiplyScalar(this.hipScale);
        hips.position.add(d.set(d.x * sx, d.y * sy, d.z * sz));
      }
    }
  }

  /** Rotation read back from the model's normalized bone node, in the stream's frame. */
  appliedRotation(bone) {
    const node = this.vrm.humanoid.getNormalizedBoneNode(bone);
    if (!node) return null;
    const q = node.quaternion;
    const [sx, sy, sz] = this.sign;
    return [q.x * sx, q.y * sy, q.z * sz, q.w];
  }

  appliedHipsPosition() {
    const hips = this.vrm.humanoid.getNormalizedBoneNode('hips');
    if (!hips) return null;
    const [sx, sy, sz] = this.sign;
    const d = hips.position.clone().sub(this.restHipsVrm).divideScalar(this.hipScale);
    return [d.x * sx + this.restHipsStream.x, d.y * sy + this.restHipsStream.y, d.z * sz + this.restHipsStream.z];
  }

  /** World position of a raw (skinned) bone: lets tests check that the mesh really follows. */
  rawBoneWorldPosition(bone) {
    const node = this.vrm.humanoid.getRawBoneNode(bone);
    if (!node) return null;
    node.updateWorldMatrix(true, false);
    return new THREE.Vector3().setFromMatrixPosition(node.matrixWorld).toArray();
  }

  update(dt) {
    this.vrm.update(dt);
  }

  dispose() {
    VRMUtils.deepDispose(this.vrm.scene);
  }
}
