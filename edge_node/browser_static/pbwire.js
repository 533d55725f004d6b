// The device page's wire: a hand-written protobuf writer for ecd.v1.Frame and reader for
// ecd.v1.Result (proto/ecd/v1/ecd.proto) — only the fields a page sends or reads, so no protobuf
// library is shipped — and the activation encodings of ecd/codec.py (float16, int8 affine).
// Each numeric step mirrors numpy's float32 arithmetic (Math.fround after every operation), so a
// page encodes an activation to the same bytes the Python agent would.
"use strict";

const ecdWire = (() => {
  const ENCODING = { float32: 1, float16: 2, int8: 3, uint8: 4 };  // ecd.v1.Encoding
  const utf8 = new TextEncoder();
  const utf8in = new TextDecoder();

  class Writer {
    constructor() { this.parts = []; this.size = 0; }
    push(bytes) { this.parts.push(bytes); this.size += bytes.length; }
    varint(value) {  // value: a Number >= 0 (< 2^53) or a BigInt (a negative int32 is sign-extended to 64 bits)
      let v = BigInt.asUintN(64, BigInt(value));
      const out = [];
      while (v >= 0x80n) { out.push(Number(v & 0x7fn) | 0x80); v >>= 7n; }
      out.push(Number(v));
      this.push(Uint8Array.from(out));
    }
    tag(field, wire) { this.varint(field * 8 + wire); }
    uint(field, value) { if (value) { this.tag(field, 0); this.varint(value); } }
    bytes(field, bytes) { if (bytes.length) { this.tag(field, 2); this.varint(bytes.length); this.push(bytes); } }
    string(field, text) { this.bytes(field, utf8.encode(text)); }
    message(field, writer) { this.tag(field, 2); this.varint(writer.size); for (const p of writer.parts) this.push(p); }
    float(field, value) {
      if (!value) return;
      const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, value, true);
      this.tag(field, 5); this.push(b);
    }
    double(field, value) {
      if (!value) return;
      const b = new Uint8Array(8); new DataView(b.buffer).setFloat64(0, value, true);
      this.tag(field, 1); this.push(b);
    }
    packedInts(field, values) {
      const inner = new Writer();
      for (const v of values) inner.varint(v);
      this.tag(field, 2); this.varint(inner.size); for (const p of inner.parts) this.push(p);
    }
    finish() {
      const out = new Uint8Array(this.size);
      let at = 0;
      for (const p of this.parts) { out.set(p, at); at += p.length; }
      return out;
    }
  }

  // ecd.v1.Frame: device_id 1, frame_id 2, token 3, model_id 4, model_version 5, split_device 6,
  // tensor 8 {encoding 1, shape 2, data 3, scale 4, zero_point 5}, captured_unix_ns 9, device_compute_s 10.
  // Every frame is complete (protocol revision 1): a page's frames are small, and a reconnect needs no state.
  function frame(f) {
    const t = new Writer();
    t.uint(1, ENCODING[f.tensor.encoding]);
    t.packedInts(2, f.tensor.shape);
    t.bytes(3, f.tensor.data);
    t.float(4, f.tensor.scale || 0);
    if (f.tensor.zeroPoint) { t.tag(5, 0); t.varint(BigInt(f.tensor.zeroPoint)); }
    const w = new Writer();
    w.string(1, f.deviceId);
    w.uint(2, f.frameId);
    w.string(3, f.token);
    w.string(4, f.modelId);
    w.string(5, f.modelVersion);
    w.uint(6, f.splitDevice);
    w.message(8, t);
    w.uint(9, BigInt(f.capturedMs) * 1000000n);
    w.double(10, f.deviceComputeS);
    return w.finish();
  }

  class Reader {
    constructor(bytes) { this.b = bytes; this.at = 0; this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength); }
    done() { return this.at >= this.b.length; }
    varint() {
      let v = 0n, shift = 0n;
      for (;;) {
        const byte = this.b[this.at++];
        v |= BigInt(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return v;
        shift += 7n;
      }
    }
    bytes() { const n = Number(this.varint()); const out = this.b.subarray(this.at, this.at + n); this.at += n; return out; }
    skip(wire) {
      if (wire === 0) this.varint();
      else if (wire === 1) this.at += 8;
      else if (wire === 2) this.bytes();
      else if (wire === 5) this.at += 4;
      else throw new Error("protobuf: wire type " + wire);
    }
    fields(each) {
      while (!this.done()) {
        const key = Number(this.varint());
        each(key >> 3, key & 7);
      }
    }
  }

  function floats(r, wire, into) {
    if (wire === 5) { into.push(r.view.getFloat32(r.at, true)); r.at += 4; return; }
    const b = r.bytes();
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i + 4 <= b.length; i += 4) into.push(v.getFloat32(i, true));
  }

  // ecd.v1.Result: frame_id 2, heads 3 {head 1, label 2, index 3}, error 4 {code 1, message 2},
  // split_device 5, split_edge 6, uplink_bytes 10, output 12, edge_id 13; the rest is skipped.
  function result(bytes) {
    const r = new Reader(bytes);
    const out = { frameId: 0, heads: [], error: null, splitDevice: 0, splitEdge: 0, uplinkBytes: 0, output: [], edgeId: "" };
    r.fields((field, wire) => {
      if (field === 2 && wire === 0) out.frameId = Number(r.varint());
      else if (field === 3 && wire === 2) {
        const h = { head: "", label: "", index: 0 }, hr = new Reader(r.bytes());
        hr.fields((f, w) => {
          if (f === 1 && w === 2) h.head = utf8in.decode(hr.bytes());
          else if (f === 2 && w === 2) h.label = utf8in.decode(hr.bytes());
          else if (f === 3 && w === 0) h.index = Number(BigInt.asIntN(32, hr.varint()));
          else hr.skip(w);
        });
        out.heads.push(h);
      } else if (field === 4 && wire === 2) {
        const e = { code: 0, message: "" }, er = new Reader(r.bytes());
        er.fields((f, w) => {
          if (f === 1 && w === 0) e.code = Number(er.varint());
          else if (f === 2 && w === 2) e.message = utf8in.decode(er.bytes());
          else er.skip(w);
        });
        out.error = e;
      } else if (field === 5 && wire === 0) out.splitDevice = Number(r.varint());
      else if (field === 6 && wire === 0) out.splitEdge = Number(r.varint());
      else if (field === 10 && wire === 0) out.uplinkBytes = Number(r.varint());
      else if (field === 12 && (wire === 2 || wire === 5)) floats(r, wire, out.output);
      else if (field === 13 && wire === 2) out.edgeId = utf8in.decode(r.bytes());
      else r.skip(wire);
    });
    return out;
  }

  // ---- encodings (ecd/codec.py) ------------------------------------------------------------
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

  function toHalf(value) {  // float32 -> IEEE half bits, round to nearest even (numpy's astype(float16))
    f32[0] = value;
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
    const e = exp - 127 + 15;
    if (e >= 0x1f) return sign | 0x7c00;
    if (e <= 0) {
      if (e < -10) return sign;
      mant |= 0x800000;
      const shift = 14 - e;
      let half = mant >>> shift;
      const rem = mant & ((1 << shift) - 1), halfway = 1 << (shift - 1);
      if (rem > halfway || (rem === halfway && (half & 1))) half++;
      return sign | half;
    }
    let half = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
    return sign | half;
  }

  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  const TINY = 1.1754943508222875e-38;  // np.finfo(np.float32).tiny

  // {encoding, shape, data: Uint8Array, scale, zeroPoint} for a Float32Array activation
  function encode(x, shape, encoding) {
    if (encoding === "float32") return { encoding, shape, data: new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength)) };
    if (encoding === "float16") {
      const out = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) out[i] = toHalf(x[i]);
      return { encoding, shape, data: new Uint8Array(out.buffer) };
    }
    if (encoding === "int8") {
      let lo = 0, hi = 0;
      for (let i = 0; i < x.length; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i]; }
      const scale = hi > lo ? Math.max(Math.fround((hi - lo) / 255), TINY) : 1.0;
      const zeroPoint = roundHalfEven(-128 - lo / scale);
      const q = new Int8Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const v = roundHalfEven(Math.fround(x[i] / scale)) + zeroPoint;
        q[i] = v < -128 ? -128 : v > 127 ? 127 : v;
      }
      return { encoding, shape, data: new Uint8Array(q.buffer), scale, zeroPoint };
    }
    throw new Error("encoding: " + encoding);
  }

  return { frame, result, encode, toHalf, ENCODING };
})();
if (typeof module !== "undefined") module.exports = ecdWire;  // node, for checking against numpy
