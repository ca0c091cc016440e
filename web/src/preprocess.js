// Image preprocessing from the bundle manifest's `image` block: resize (Pillow-exact), rescale, normalise, CHW float32.
//
// The arithmetic follows the Python side step by step (transformers' PIL image-processor backend and the ONNX
// captioner): rescale in float64 then round to float32, normalise in float32 with float32 mean/std.
// Pure functions, no DOM: node runs them in the parity tests.

import { resizeLikePillow } from "./resize.js";

const f32 = Math.fround;

/** RGBA pixels (as a canvas gives them) -> RGB pixels (alpha dropped, as Pillow's `convert("RGB")` does). */
export function rgbaToRgb(rgba) {
  const count = rgba.length / 4;
  const rgb = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) {
    rgb[i * 3] = rgba[i * 4];
    rgb[i * 3 + 1] = rgba[i * 4 + 1];
    rgb[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return rgb;
}

/** The (width, height) the model takes, and whether an image of (width, height) must be resized to it. */
export function targetSize(image, width, height) {
  const [outH, outW] = image.size;
  return { outW, outH, resize: width !== outW || height !== outH };
}

/**
 * RGB pixels -> the model's `pixel_values`.
 * @param {Uint8Array} rgb  (height, width, 3) interleaved pixels
 * @param {number} width
 * @param {number} height
 * @param {object} image  the manifest's `image` block: size [H, W], do_resize, resample, do_rescale,
 *   rescale_factor, do_normalize, image_mean, image_std
 * @returns {{data: Float32Array, dims: number[], resized: boolean}} data of shape dims = (1, 3, H, W)
 */
export function pixelValues(rgb, width, height, image) {
  const { outW, outH, resize } = targetSize(image, width, height);
  let pixels = rgb;
  if (resize) {
    if (image.do_resize === false) {
      throw new Error(`the model takes ${outW}x${outH} images and its bundle says not to resize; this one is ${width}x${height}`);
    }
    pixels = resizeLikePillow(rgb, width, height, 3, outW, outH, image.resample ?? "bilinear");
  }
  const plane = outW * outH;
  const data = new Float32Array(3 * plane);
  const factor = image.do_rescale === false ? null : image.rescale_factor ?? 1 / 255;
  const normalize = image.do_normalize !== false && image.image_mean && image.image_std;
  for (let c = 0; c < 3; c++) {
    const mean = normalize ? f32(image.image_mean[c]) : 0;
    const std = normalize ? f32(image.image_std[c]) : 1;
    for (let i = 0; i < plane; i++) {
      let v = pixels[i * 3 + c];
      if (factor !== null) v = f32(v * factor);
      if (normalize) v = f32(f32(v - mean) / std);
      data[c * plane + i] = v;
    }
  }
  return { data, dims: [1, 3, outH, outW], resized: resize };
}
