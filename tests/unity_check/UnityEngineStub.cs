// A stand-in for the few UnityEngine types clients/unity/AvatarBridgeReceiver.cs uses, so the test
// can compile and run it with Mono (there is no Unity here). Transforms hold world rotation and
// position directly; the test's model root sits at the origin, unrotated. This is NOT Unity.
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public class Object { }

    public class Component : Object
    {
        public static readonly Dictionary<Type, object> Registry = new Dictionary<Type, object>();
        public Transform transform;
        public T GetComponent<T>() => Registry.TryGetValue(typeof(T), out object c) ? (T)c : default(T);
    }

    public class Behaviour : Component { public bool enabled = true; }
    public class MonoBehaviour : Behaviour { }

    public class Transform : Component
    {
        public Quaternion rotation = Quaternion.identity;
        public Vector3 position;
        public Vector3 InverseTransformPoint(Vector3 p) => p;
        public Vector3 TransformPoint(Vector3 p) => p;
    }

    public class Animator : Behaviour
    {
        public bool isHuman = true;
        public readonly Dictionary<HumanBodyBones, Transform> Bones = new Dictionary<HumanBodyBones, Transform>();
        public Transform GetBoneTransform(HumanBodyBones b) => Bones.TryGetValue(b, out Transform t) ? t : null;
    }

    // Same names and order as Unity's enum.
    public enum HumanBodyBones
    {
        Hips, LeftUpperLeg, RightUpperLeg, LeftLowerLeg, RightLowerLeg, LeftFoot, RightFoot, Spine, Chest, Neck,
        Head, LeftShoulder, RightShoulder, LeftUpperArm, RightUpperArm, LeftLowerArm, RightLowerArm, LeftHand,
        RightHand, LeftToes, RightToes, LeftEye, RightEye, Jaw,
        LeftThumbProximal, LeftThumbIntermediate, LeftThumbDistal, LeftIndexProximal, LeftIndexIntermediate,
        LeftIndexDistal, LeftMiddleProximal, LeftMiddleIntermediate, LeftMiddleDistal, LeftRingProximal,
        LeftRingIntermediate, LeftRingDistal, LeftLittleProximal, LeftLittleIntermediate, LeftLittleDistal,
        RightThumbProximal, RightThumbIntermediate, RightThumbDistal, RightIndexProximal, RightIndexIntermediate,
        RightIndexDistal, RightMiddleProximal, RightMiddleIntermediate, RightMiddleDistal, RightRingProximal,
        RightRingIntermediate, RightRingDistal, RightLittleProximal, RightLittleIntermediate, RightLittleDistal,
        UpperChest, LastBone
    }

    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 operator *(Vector3 a, float s) => new Vector3(a.x * s, a.y * s, a.z * s);
        public static Vector3 operator +(Vector3 a, Vector3 b) => new Vector3(a.x + b.x, a.y + b.y, a.z + b.z);
    }

    public struct Quaternion
    {
        public float x, y, z, w;
        public Quaternion(float x, float y, float z, float w) { this.x = x; this.y = y; this.z = z; this.w = w; }
        public static Quaternion identity => new Quaternion(0, 0, 0, 1);
        public static Quaternion Inverse(Quaternion q) => new Quaternion(-q.x, -q.y, -q.z, q.w);
        public static Quaternion operator *(Quaternion a, Quaternion b) => new Quaternion(
            a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y, a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
            a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w, a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z);
    }

    public static class Mathf { public static float Min(float a, float b) => Math.Min(a, b); }
    public static class Debug { public static void LogError(object m) => Console.Error.WriteLine(m); }
    public class TooltipAttribute : Attribute { public TooltipAttribute(string t) { } }
    public class RequireComponent : Attribute { public RequireComponent(Type t) { } }
}
