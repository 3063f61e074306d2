// avatar-bridge WebSocket receiver for a Unity Humanoid (Animator with a Humanoid avatar).
//
// NOT COMPILED: there is no Unity on the machine this was written on. It uses only UnityEngine and
// .NET Standard 2.1 (System.Net.WebSockets.ClientWebSocket), and a small JSON reader below because
// JsonUtility cannot read dictionaries. Treat it as a starting point; see clients/unity/README.md.
//
// The stream (protocol v1): parent-local rotations of the normalized VRM rig in a right-handed frame
// (Y up, avatar faces +Z, its left arm +X); identity = T-pose. Unity is left-handed (faces +Z, left
// arm -X), i.e. X mirrored: q -> (x, -y, -z, w), p -> (-x, y, z). The script turns each frame into
// world rotations away from the T-pose (product down the chain) and puts them on the model's bones
// relative to the rotations they had at Start, so any humanoid works (its rest pose must be a
// T-pose at Start - VRM models are), and bones the model lacks (e.g. UpperChest) are handled.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine;

[RequireComponent(typeof(Animator))]
public class AvatarBridgeReceiver : MonoBehaviour
{
    [Tooltip("avatar-bridge server; add ?token=... for a server bound beyond 127.0.0.1")]
    public string url = "ws://127.0.0.1:8765/";
    [Tooltip("Apply the streamed hips position (else only rotations)")]
    public bool moveHips = true;

    Animator animator;
    readonly Dictionary<HumanBodyBones, Quaternion> restRelative = new Dictionary<HumanBodyBones, Quaternion>();
    Vector3 restHipsLocal;
    float hipsScale = 1f;
    float streamHipsHeight = 0.95f;
    readonly List<string> boneOrder = new List<string>();            // stream bones, parents first
    readonly Dictionary<string, string> parentOf = new Dictionary<string, string>();

    CancellationTokenSource cancel;
    readonly object latestLock = new object();
    Dictionary<string, object> latestFrame;                           // newest parsed frame, from the socket thread
    public string Status { get; private set; } = "idle";
    public long LastSeq { get; private set; } = -1;

    void Start()
    {
        animator = GetComponent<Animator>();
        if (animator == null || !animator.isHuman)
        {
            Debug.LogError("AvatarBridgeReceiver needs an Animator with a Humanoid avatar (Rig > Animation Type: Humanoid)");
            enabled = false;
            return;
        }
        Quaternion rootInverse = Quaternion.Inverse(transform.rotation);
        foreach (HumanBodyBones b in Enum.GetValues(typeof(HumanBodyBones)))
        {
            if (b == HumanBodyBones.LastBone) continue;
            Transform t = animator.GetBoneTransform(b);
            if (t != null) restRelative[b] = rootInverse * t.rotation;
        }
        Transform hips = animator.GetBoneTransform(HumanBodyBones.Hips);
        restHipsLocal = transform.InverseTransformPoint(hips.position);
        cancel = new CancellationTokenSource();
        Task.Run(() => ReceiveLoop(cancel.Token));
    }

    void OnDestroy()
    {
        cancel?.Cancel();
    }

    async Task ReceiveLoop(CancellationToken token)
    {
        float delay = 0.5f;
        var buffer = new byte[1 << 16];
        while (!token.IsCancellationRequested)
        {
            using (var ws = new ClientWebSocket())
            {
                try
                {
                    Status = "connecting";
                    await ws.ConnectAsync(new Uri(url), token);
                    Status = "connected";
                    delay = 0.5f;
                    var message = new StringBuilder();
                    while (ws.State == WebSocketState.Open && !token.IsCancellationRequested)
                    {
                        WebSocketReceiveResult r = await ws.ReceiveAsync(new ArraySegment<byte>(buffer), token);
                        if (r.MessageType == WebSocketMessageType.Close) break;
                        message.Append(Encoding.UTF8.GetString(buffer, 0, r.Count));
                        if (!r.EndOfMessage) continue;
                        var msg = MiniJson.Parse(message.ToString()) as Dictionary<string, object>;
                        message.Clear();
                        if (msg == null || !msg.TryGetValue("type", out object type)) continue;
                        if ((string)type == "hello") ReadHello(msg);
                        else if ((string)type == "frame") lock (latestLock) latestFrame = msg;   // only the newest pose matters
                    }
                }
                catch (Exception e) when (!(e is OperationCanceledException))
                {
                    Status = "error: " + e.Message;
                }
            }
            Status = $"reconnecting in {delay:0.0} s";
            try { await Task.Delay(TimeSpan.FromSeconds(delay), token); } catch (OperationCanceledException) { }
            delay = Mathf.Min(delay * 2f, 8f);
        }
    }

    void ReadHello(Dictionary<string, object> hello)
    {
        lock (latestLock)
        {
            boneOrder.Clear();
            parentOf.Clear();
            foreach (object o in (List<object>)hello["bones"])
            {
                var bone = (Dictionary<string, object>)o;
                string name = (string)bone["name"];
                boneOrder.Add(name);
                parentOf[name] = bone["parent"] as string;
                if (bone["parent"] == null) streamHipsHeight = (float)(double)((List<object>)bone["offset"])[1];
            }
        }
    }

    void LateUpdate()   // after the Animator, so the stream wins
    {
        Dictionary<string, object> frame;
        lock (latestLock) { frame = latestFrame; latestFrame = null; }
        if (frame == null || boneOrder.Count == 0) return;
        var people = (List<object>)frame["people"];
        if (people.Count == 0) return;
        Dictionary<string, object> person = (Dictionary<string, object>)people[0];
        foreach (object p in people)
        {
            var d = (Dictionary<string, object>)p;
            if (frame["driver"] != null && Convert.ToInt64(d["id"]) == Convert.ToInt64(frame["driver"])) person = d;
        }
        var pose = (Dictionary<string, object>)person["pose"];
        LastSeq = Convert.ToInt64(frame["seq"]);

        // World rotation away from the T-pose of every stream bone, in Unity's frame.
        var world = new Dictionary<string, Quaternion>();
        foreach (string name in boneOrder)
        {
            Quaternion local = Quaternion.identity;
            if (pose.TryGetValue(name, out object t) && ((Dictionary<string, object>)t).TryGetValue("rotation", out object r))
            {
                var q = (List<object>)r;
                local = new Quaternion(F(q[0]), -F(q[1]), -F(q[2]), F(q[3]));   // canonical -> Unity
            }
            string parent = parentOf[name];
            world[name] = parent == null ? local : world[parent] * local;
            if (TryUnityBone(name, out HumanBodyBones bone) && restRelative.TryGetValue(bone, out Quaternion rest))
                animator.GetBoneTransform(bone).rotation = transform.rotation * world[name] * rest;
        }
        if (moveHips && pose.TryGetValue("hips", out object h) && ((Dictionary<string, object>)h).TryGetValue("position", out object pos))
        {
            var p = (List<object>)pos;
            hipsScale = streamHipsHeight > 1e-3f ? restHipsLocal.y / streamHipsHeight : 1f;
            var delta = new Vector3(-F(p[0]), F(p[1]) - streamHipsHeight, F(p[2])) * hipsScale;   // canonical -> Unity
            animator.GetBoneTransform(HumanBodyBones.Hips).position = transform.TransformPoint(restHipsLocal + delta);
        }
    }

    static float F(object v) => (float)(double)v;

    /// VRM 1.0 bone name (camelCase) -> Unity HumanBodyBones; VRM thumbs are one segment off Unity's.
    static bool TryUnityBone(string vrmName, out HumanBodyBones bone)
    {
        string name = char.ToUpperInvariant(vrmName[0]) + vrmName.Substring(1);
        name = name.Replace("ThumbProximal", "ThumbIntermediate").Replace("ThumbMetacarpal", "ThumbProximal");
        return Enum.TryParse(name, false, out bone) && bone != HumanBodyBones.LastBone;
    }
}

/// Minimal JSON reader: objects -> Dictionary<string, object>, arrays -> List<object>, numbers -> double.
static class MiniJson
{
    public static object Parse(string s) { int i = 0; return Value(s, ref i); }

    static void Skip(string s, ref int i) { while (i < s.Length && char.IsWhiteSpace(s[i])) i++; }

    static object Value(string s, ref int i)
    {
        Skip(s, ref i);
        char c = s[i];
        if (c == '{')
        {
            var obj = new Dictionary<string, object>();
            i++; Skip(s, ref i);
            if (s[i] == '}') { i++; return obj; }
            while (true)
            {
                Skip(s, ref i);
                string key = Str(s, ref i);
                Skip(s, ref i); i++;            // ':'
                obj[key] = Value(s, ref i);
                Skip(s, ref i);
                if (s[i++] == '}') return obj;  // else ','
            }
        }
        if (c == '[')
        {
            var list = new List<object>();
            i++; Skip(s, ref i);
            if (s[i] == ']') { i++; return list; }
            while (true)
            {
                list.Add(Value(s, ref i));
                Skip(s, ref i);
                if (s[i++] == ']') return list;
            }
        }
        if (c == '"') return Str(s, ref i);
        if (string.CompareOrdinal(s, i, "true", 0, 4) == 0) { i += 4; return true; }
        if (string.CompareOrdinal(s, i, "false", 0, 5) == 0) { i += 5; return false; }
        if (string.CompareOrdinal(s, i, "null", 0, 4) == 0) { i += 4; return null; }
        int start = i;
        while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
        return double.Parse(s.Substring(start, i - start), CultureInfo.InvariantCulture);
    }

    static string Str(string s, ref int i)
    {
        var sb = new StringBuilder();
        i++;                                     // opening quote
        while (s[i] != '"')
        {
            if (s[i] == '\\')
            {
                char e = s[++i];
                if (e == 'u') { sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 4), 16)); i += 4; }
                else sb.Append(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e);
            }
            else sb.Append(s[i]);
            i++;
        }
        i++;
        return sb.ToString();
    }
}
