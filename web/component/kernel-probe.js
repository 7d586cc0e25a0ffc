// Which engine worker build to start, shared by the app (index.html, before any wasm loads) and
// <reward-scorer> (reward-scorer.js imports this file). Valid both as a classic script and as an
// ES module: it only defines `globalThis.rewardlensProbeKernel`.
//
// The simd128 + relaxed-simd build where the browser validates a module using
// i32x4.relaxed_dot_i8x16_i7x16_add_s (Chrome/Edge 114+), else the simd128 build; `forced`
// ("simd128" | "relaxed", from `?kernel=` or the component's `kernel` option) overrides it.
// The probe also records how the engine treats an i7 operand with its top bit set, as
// onnxruntime's HasUSDot check does: x86 (pmaddubsw / VNNI) reads it unsigned, Arm's sdot
// signed. Our int8 kernel feeds only 7-bit values there, so both give the same results.
globalThis.rewardlensProbeKernel = function (forced, base) {
  function splat(b) { var a = []; for (var i = 0; i < 16; i++) a.push(b); return a; }
  // (func (export "f") (result i32)
  //   (i32x4.extract_lane 0 (i32x4.relaxed_dot_i8x16_i7x16_add_s
  //     (v128.const i8x16 1 ...) (v128.const i8x16 0x80 ...) (v128.const i32x4 0 0 0 0))))
  var body = [0].concat([253, 12], splat(1), [253, 12], splat(0x80), [253, 12], splat(0),
    [253, 147, 2], [253, 27, 0], [11]);
  var bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 127, 3, 2, 1, 0,
    7, 5, 1, 1, 102, 0, 0, 10, body.length + 2, 1, body.length].concat(body));
  var relaxed = false, dot = null;
  try {
    relaxed = typeof WebAssembly === "object" && WebAssembly.validate(bytes);
    if (relaxed) {
      var r = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.f();
      // Four products 1 x 0x80: 512 if that byte is read unsigned, -512 if signed.
      dot = r === 512 ? "unsigned" : r === -512 ? "signed" : "other (" + r + ")";
    }
  } catch (e) {
    relaxed = false;
  }
  var build = forced === "simd128" || forced === "relaxed" ? forced : relaxed ? "relaxed" : "simd128";
  var stem = build === "relaxed" ? "worker_relaxed" : "worker";
  return {
    build: build,
    relaxedSupported: relaxed,
    relaxedDotHighBit: dot,
    forced: build === forced,
    loader: base + stem + "_loader.js",
    script: base + stem + ".js",
    wasm: base + stem + "_bg.wasm",
  };
};
