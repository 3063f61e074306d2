// Runs AvatarBridgeReceiver against a live server: a humanoid without UpperChest whose bones all
// rest at identity (hips at 0.9 m), LateUpdate called like Unity would, then prints what the bones
// got as JSON. usage: mono harness.exe ws://127.0.0.1:PORT/ FRAMES
using System;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Threading;
using UnityEngine;

static class Harness
{
    static void Call(object o, string method) =>
        o.GetType().GetMethod(method, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public).Invoke(o, null);

    static string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);

    static int Main(string[] args)
    {
        var animator = new Animator();
        foreach (HumanBodyBones b in Enum.GetValues(typeof(HumanBodyBones)))
            if (b != HumanBodyBones.LastBone && b != HumanBodyBones.UpperChest) animator.Bones[b] = new Transform();
        animator.Bones[HumanBodyBones.Hips].position = new Vector3(0f, 0.9f, 0f);
        Component.Registry[typeof(Animator)] = animator;
        var receiver = new AvatarBridgeReceiver { url = args[0], transform = new Transform() };
        Call(receiver, "Start");
        long wanted = long.Parse(args[1]);
        int applied = 0;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        long seq = -1;
        while (applied < wanted && DateTime.UtcNow < deadline)
        {
            Call(receiver, "LateUpdate");
            if (receiver.LastSeq != seq) { seq = receiver.LastSeq; applied++; }
            Thread.Sleep(16);
        }
        var sb = new StringBuilder();
        sb.Append("{\"status\":\"").Append(receiver.Status).Append("\",\"applied\":").Append(applied);
        sb.Append(",\"seq\":").Append(receiver.LastSeq).Append(",\"rotations\":{");
        bool first = true;
        foreach (var kv in animator.Bones)
        {
            var q = kv.Value.rotation;
            sb.Append(first ? "" : ",").Append('"').Append(kv.Key).Append("\":[").Append(F(q.x)).Append(',')
              .Append(F(q.y)).Append(',').Append(F(q.z)).Append(',').Append(F(q.w)).Append(']');
            first = false;
        }
        var p = animator.Bones[HumanBodyBones.Hips].position;
        sb.Append("},\"hips\":[").Append(F(p.x)).Append(',').Append(F(p.y)).Append(',').Append(F(p.z)).Append("]}");
        Console.WriteLine(sb.ToString());
        Call(receiver, "OnDestroy");
        Environment.Exit(applied >= wanted ? 0 : 1);
        return 0;
    }
}
