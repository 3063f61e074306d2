// The small camera-space panel: every person's 2D keypoints (normalized x/width, y/height) drawn
// with the skeleton edges from the hello message, the driving person highlighted.

const MIN_SCORE = 0.3;

export class KeypointPanel {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.edges = [];
  }

  setEdges(edges) {
    this.edges = Array.isArray(edges) ? edges : [];
  }

  draw(frame) {
    const { canvas, ctx } = this;
    const image = frame.image || { width: 16, height: 9 };
    const width = canvas.width;
    const height = Math.round((width * image.height) / Math.max(image.width, 1));
    if (canvas.height !== height) canvas.height = height;
    ctx.fillStyle = '#101418';
    ctx.fillRect(0, 0, width, height);
    for (const person of frame.people || []) {
      const driving = person.id === frame.driver;
      const kps = person.keypoints || [];
      ctx.strokeStyle = driving ? '#5fd38d' : '#7b8794';
      ctx.lineWidth = driving ? 2 : 1;
      ctx.beginPath();
      for (const [a, b] of this.edges) {
        const p = kps[a];
        const q = kps[b];
        if (!p || !q || p[2] < MIN_SCORE || q[2] < MIN_SCORE) continue;
        ctx.moveTo(p[0] * width, p[1] * height);
        ctx.lineTo(q[0] * width, q[1] * height);
      }
      ctx.stroke();
      ctx.fillStyle = driving ? '#c9f7d8' : '#aab4bf';
      for (const p of kps) {
        if (p[2] < MIN_SCORE) continue;
        ctx.fillRect(p[0] * width - 1.5, p[1] * height - 1.5, 3, 3);
      }
    }
  }
}
