// The mask editor: the photo, the segmenter's mask as a coloured overlay, and brush/eraser strokes on top.
// The mask lives in the overlay canvas's alpha channel at the photo's own size (255 = repaint), so it is
// exported exactly as painted. Strokes are kept as a list and replayed on a new segmenter mask, so moving
// a slider keeps the hand corrections.

const TINT = [232, 28, 120];

export class MaskEditor {
  constructor({ stage, photoCanvas, maskCanvas, cursor, onChange }) {
    this.stage = stage;
    this.photo = photoCanvas;
    this.mask = maskCanvas;
    this.ctx = maskCanvas.getContext("2d", { willReadFrequently: true });
    this.cursor = cursor;
    this.onChange = onChange;
    this.hasPhoto = false;
    this.base = null; // canvas holding the segmenter's mask (alpha), or null: empty
    this.strokes = [];
    this.current = null;
    this.tool = "brush";
    this.size = 32; // brush diameter in screen pixels
    this.key = null; // keyboard brush position in photo pixels
    this.listen();
  }

  get width() { return this.photo.width; }
  get height() { return this.photo.height; }
  get loaded() { return this.width > 0 && this.hasPhoto; }

  /** Show a new photo (ImageBitmap or image); the mask starts empty. */
  load(image) {
    for (const canvas of [this.photo, this.mask]) {
      canvas.width = image.width;
      canvas.height = image.height;
    }
    this.photo.getContext("2d").drawImage(image, 0, 0);
    this.hasPhoto = true;
    this.base = null;
    this.strokes = [];
    this.key = { x: image.width / 2, y: image.height / 2 };
    this.render();
  }

  /** Replace the segmenter's mask (an L image of any size; scaled to the photo) and keep the strokes. */
  setBase(image) {
    const tmp = new OffscreenCanvas(this.width, this.height);
    const tctx = tmp.getContext("2d", { willReadFrequently: true });
    tctx.drawImage(image, 0, 0, this.width, this.height);
    const data = tctx.getImageData(0, 0, this.width, this.height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const value = px[i];
      px[i] = TINT[0];
      px[i + 1] = TINT[1];
      px[i + 2] = TINT[2];
      px[i + 3] = value;
    }
    tctx.putImageData(data, 0, 0);
    this.base = tmp;
    this.render();
  }

  /** Back to the segmenter's mask: drop every stroke. */
  reset() {
    this.strokes = [];
    this.render();
  }

  undo() {
    if (this.strokes.pop()) this.render();
  }

  render() {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, this.width, this.height);
    if (this.base) ctx.drawImage(this.base, 0, 0);
    for (const stroke of this.strokes) this.draw(stroke, 0);
    this.changed();
  }

  draw(stroke, from) {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = stroke.tool === "eraser" ? "destination-out" : "source-over";
    ctx.fillStyle = ctx.strokeStyle = `rgb(${TINT.join(",")})`;
    ctx.lineWidth = stroke.radius * 2;
    ctx.lineCap = ctx.lineJoin = "round";
    const pts = stroke.points;
    if (pts.length === 1 || from === 0) {
      ctx.beginPath();
      ctx.arc(pts[0][0], pts[0][1], stroke.radius, 0, Math.PI * 2);
      ctx.fill();
    }
    if (pts.length > 1) {
      ctx.beginPath();
      const start = Math.max(0, from - 1);
      ctx.moveTo(pts[start][0], pts[start][1]);
      for (let i = start + 1; i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = "source-over";
  }

  changed() {
    this.onChange?.(this);
  }

  /** Fraction of the photo that will be repainted (mask value above half). */
  coverage() {
    if (!this.width) return 0;
    const px = this.ctx.getImageData(0, 0, this.width, this.height).data;
    let on = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 127) on++;
    return on / (this.width * this.height);
  }

  /** The mask as a grey PNG (white = repaint) at the photo's size. */
  async toBlob() {
    const out = new OffscreenCanvas(this.width, this.height);
    const octx = out.getContext("2d");
    const src = this.ctx.getImageData(0, 0, this.width, this.height);
    const dst = octx.createImageData(this.width, this.height);
    for (let i = 0; i < src.data.length; i += 4) {
      const a = src.data[i + 3];
      dst.data[i] = dst.data[i + 1] = dst.data[i + 2] = a;
      dst.data[i + 3] = 255;
    }
    octx.putImageData(dst, 0, 0);
    return out.convertToBlob({ type: "image/png" });
  }

  // --- input ------------------------------------------------------------------------------------------
  scale() {
    const rect = this.stage.getBoundingClientRect();
    return rect.width ? this.width / rect.width : 1;
  }

  toPhoto(event) {
    const rect = this.stage.getBoundingClientRect();
    const s = this.width / rect.width;
    return [(event.clientX - rect.left) * s, (event.clientY - rect.top) * s];
  }

  radius() {
    return Math.max(1, (this.size / 2) * this.scale());
  }

  begin(point) {
    this.current = { tool: this.tool, radius: this.radius(), points: [point] };
    this.strokes.push(this.current);
    this.draw(this.current, 0);
  }

  extend(point) {
    this.current.points.push(point);
    this.draw(this.current, this.current.points.length - 1);
  }

  end() {
    if (this.current) {
      this.current = null;
      this.changed();
    }
  }

  listen() {
    const stage = this.stage;
    stage.addEventListener("pointerdown", (e) => {
      if (!this.loaded || e.button !== 0 || !e.isPrimary || this.current) return; // one stroke at a time
      stage.setPointerCapture(e.pointerId);
      this.begin(this.toPhoto(e));
      e.preventDefault();
    });
    stage.addEventListener("pointermove", (e) => {
      this.showCursor(e.clientX, e.clientY);
      if (this.current && e.isPrimary) this.extend(this.toPhoto(e));
    });
    for (const name of ["pointerup", "pointercancel"]) stage.addEventListener(name, () => this.end());
    stage.addEventListener("pointerleave", () => { if (!this.current) this.cursor.hidden = true; });
    stage.addEventListener("keydown", (e) => this.onKey(e));
    stage.addEventListener("focus", () => this.showKeyCursor());
    stage.addEventListener("blur", () => { this.cursor.hidden = true; });
  }

  onKey(e) {
    if (!this.loaded || e.altKey || ((e.ctrlKey || e.metaKey) && e.key !== "z")) return; // browser shortcuts
    const step = Math.max(2, this.radius() / 2) * (e.shiftKey ? 4 : 1);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) {
      const [dx, dy] = moves[e.key];
      this.key.x = Math.min(this.width, Math.max(0, this.key.x + dx));
      this.key.y = Math.min(this.height, Math.max(0, this.key.y + dy));
      this.showKeyCursor();
    } else if (e.key === " " || e.key === "Enter") {
      this.begin([this.key.x, this.key.y]);
      this.end();
    } else if (e.key === "b" || e.key === "e") {
      this.setTool(e.key === "b" ? "brush" : "eraser");
    } else if (e.key === "[" || e.key === "]") {
      this.setSize(this.size + (e.key === "]" ? 8 : -8));
    } else if (e.key === "z" && (e.ctrlKey || e.metaKey)) {
      this.undo();
    } else {
      return;
    }
    e.preventDefault();
  }

  setTool(tool) {
    this.tool = tool;
    this.cursor.classList.toggle("eraser", tool === "eraser");
    this.stage.dispatchEvent(new CustomEvent("toolchange", { detail: tool }));
  }

  setSize(size) {
    this.size = Math.min(160, Math.max(4, size));
    this.stage.dispatchEvent(new CustomEvent("sizechange", { detail: this.size }));
  }

  showCursor(clientX, clientY) {
    const rect = this.stage.getBoundingClientRect();
    this.placeCursor(clientX - rect.left, clientY - rect.top);
  }

  showKeyCursor() {
    if (!this.loaded) return;
    const s = this.scale();
    this.placeCursor(this.key.x / s, this.key.y / s);
  }

  placeCursor(x, y) {
    const c = this.cursor;
    c.hidden = false;
    c.style.left = `${x}px`;
    c.style.top = `${y}px`;
    c.style.width = c.style.height = `${this.size}px`;
  }
}
