// Image resizing that reproduces Pillow's `Image.resize` on 8-bit RGB images, bit for bit.
//
// Python preprocesses with Pillow (transformers' PIL image-processor backend, and the ONNX captioner), and a canvas
// `drawImage` resize uses a different filter, so this module re-implements Pillow's algorithm (written from its
// documented behaviour): separable convolution with the filter's support widened by the down-scaling factor
// (anti-aliasing), coefficients normalised and rounded to 22-bit fixed point, a horizontal pass then a vertical pass,
// each rounding and clipping to 8 bits. NEAREST is Pillow's affine nearest-neighbour scaling.
//
// Pure functions, no DOM: node runs them in the parity tests.

const PRECISION_BITS = 32 - 8 - 2;
const ONE_HALF = 2 ** (PRECISION_BITS - 1);
const SCALE = 2 ** PRECISION_BITS;

function sinc(x) {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

/** Pillow's filters: name -> {support, kernel}. */
export const FILTERS = {
  box: { support: 0.5, kernel: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: { support: 1, kernel: (x) => { const a = Math.abs(x); return a < 1 ? 1 - a : 0; } },
  hamming: {
    support: 1,
    kernel: (x) => {
      const a = Math.abs(x);
      if (a === 0) return 1;
      if (a >= 1) return 0;
      const px = a * Math.PI;
      return (Math.sin(px) / px) * (0.54 + 0.46 * Math.cos(px));
    },
  },
  bicubic: {
    support: 2,
    kernel: (x) => {
      const a = -0.5;
      const t = Math.abs(x);
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
  lanczos: { support: 3, kernel: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

/** Pillow's resample names (and its integer codes) -> our filter names. */
const ALIASES = { 0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming",
  antialias: "lanczos", linear: "bilinear", cubic: "bicubic" };

/** Normalise a manifest `resample` value ("bilinear", "BICUBIC", 3, ...) to a filter name; throws if unknown. */
export function filterName(resample) {
  const key = typeof resample === "string" ? resample.toLowerCase() : resample;
  const name = ALIASES[key] ?? key;
  if (name !== "nearest" && !(name in FILTERS)) {
    throw new Error(`unknown resample filter ${JSON.stringify(resample)}; known: nearest, ${Object.keys(FILTERS).join(", ")}`);
  }
  return name;
}

/**
 * Fixed-point coefficients of one axis: for each output index, the first input index, the tap count and the taps.
 * @returns {{bounds: Int32Array, coeffs: Float64Array, ksize: number}} bounds (2*outSize) = [min, count] pairs,
 *   coeffs (outSize*ksize) integer-valued fixed-point weights.
 */
function axisCoefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const coeffs = new Float64Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  const inverse = 1 / filterScale; // Pillow multiplies by the reciprocal; dividing would round differently
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let x = 0; x < count; x++) {
      weights[x] = filter.kernel((x + xmin - center + 0.5) * inverse);
      total += weights[x];
    }
    for (let x = 0; x < count; x++) {
      const w = total !== 0 ? weights[x] / total : weights[x];
      coeffs[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * SCALE : 0.5 + w * SCALE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = count;
  }
  return { bounds, coeffs, ksize };
}

function clip8(sum) {
  const v = Math.floor(sum / SCALE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** One convolution pass along x (`horizontal`) or y over an interleaved uint8 image with `channels` channels. */
function convolve(src, width, height, channels, outSize, filter, horizontal) {
  const { bounds, coeffs, ksize } = axisCoefficients(horizontal ? width : height, outSize, filter);
  const outW = horizontal ? outSize : width;
  const outH = horizontal ? height : outSize;
  const out = new Uint8Array(outW * outH * channels);
  // step between consecutive taps in the source, and the output index along the resized axis
  const tapStride = horizontal ? channels : width * channels;
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const o = horizontal ? x : y;
      const first = bounds[o * 2];
      const count = bounds[o * 2 + 1];
      const base = horizontal ? (y * width + first) * channels : (first * width + x) * channels;
      for (let c = 0; c < channels; c++) {
        let sum = ONE_HALF;
        for (let k = 0; k < count; k++) sum += src[base + k * tapStride + c] * coeffs[o * ksize + k];
        out[(y * outW + x) * channels + c] = clip8(sum);
      }
    }
  }
  return out;
}

/** Pillow's affine nearest-neighbour scaling (accumulated source coordinates, as Pillow computes them). */
function nearest(src, width, height, channels, outW, outH) {
  const out = new Uint8Array(outW * outH * channels);
  const coord = (v) => (v < 0 ? -1 : Math.trunc(v));
  const dx = width / outW;
  const dy = height / outH;
  const xs = new Int32Array(outW);
  let xo = dx * 0.5;
  for (let x = 0; x < outW; x++, xo += dx) xs[x] = coord(xo);
  let yo = dy * 0.5;
  for (let y = 0; y < outH; y++, yo += dy) {
    const yi = coord(yo);
    if (yi < 0 || yi >= height) continue;
    for (let x = 0; x < outW; x++) {
      if (xs[x] < 0 || xs[x] >= width) continue;
      for (let c = 0; c < channels; c++) out[(y * outW + x) * channels + c] = src[(yi * width + xs[x]) * channels + c];
    }
  }
  return out;
}

/**
 * Resize an interleaved uint8 image like Pillow's `Image.resize((outW, outH), resample)`.
 * @param {Uint8Array|Uint8ClampedArray} src  (height, width, channels) pixels
 * @param {number} width  source width
 * @param {number} height  source height
 * @param {number} channels  interleaved channels (3 for RGB; every channel is filtered independently)
 * @param {number} outW  target width
 * @param {number} outH  target height
 * @param {string|number} resample  Pillow filter name or code
 * @returns {Uint8Array} (outH, outW, channels) pixels (a copy when no resize is needed, as Pillow does)
 */
export function resizeLikePillow(src, width, height, channels, outW, outH, resample) {
  const name = filterName(resample);
  if (name === "nearest") {
    return width === outW && height === outH ? Uint8Array.from(src) : nearest(src, width, height, channels, outW, outH);
  }
  const filter = FILTERS[name];
  let pixels = Uint8Array.from(src);
  let w = width;
  if (outW !== width) {
    pixels = convolve(pixels, width, height, channels, outW, filter, true);
    w = outW;
  }
  if (outH !== height) pixels = convolve(pixels, w, height, channels, outH, filter, false);
  return pixels;
}
