/// Patch embedding: the stride-p convolution of `PatchEmbed.proj` as im2col + GEMM.
///
/// Shapes: images `(B, Cin, H, W)` (NCHW, as PyTorch), patches `(B, gh·gw, P·p·p)` with the
/// column order `(plane, ky, kx)` of the conv weight `(D, P, p, p)`, output tokens `(B, gh·gw, D)`.
/// gh = H / p and gw = W / p, rounded down as a stride-p convolution does.
///
/// With a `shift` s > 0 (shifted patch tokenization) the planes are P = 5·Cin: the image, then the
/// copies `S[y][x] = I[y + oy][x + ox]` (0 outside the image) for (oy, ox) = (−s, −s), (−s, s),
/// (s, −s), (s, s), each with its Cin channels: PyTorch's `cat([x, shifted...], dim=1)`.
public enum PatchEmbedding {
    /// The (oy, ox) offsets of the planes: the image, then the four diagonal copies.
    public static func planeOffsets(shift s: Int) -> [(Int, Int)] {
        s == 0 ? [(0, 0)] : [(0, 0), (-s, -s), (-s, s), (s, -s), (s, s)]
    }

    /// Copies each p×p patch (of every plane) into a row of `patches`.
    public static func im2col(
        patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patchSize p: Int, shift: Int = 0
    ) {
        let gh = height / p, gw = width / p
        let offsets = planeOffsets(shift: shift)
        let rowLength = offsets.count * channels * p * p
        Parallel.forEachRange(batch * gh, grain: 8) { range in
            for bgy in range {
                let b = bgy / gh, gy = bgy % gh
                for gx in 0..<gw {
                    var out = patches + ((b * gh + gy) * gw + gx) * rowLength
                    for (oy, ox) in offsets {
                        for ch in 0..<channels {
                            let plane = images + (b * channels + ch) * height * width
                            // The columns of the patch row that fall inside the image, [first, last); zeros around them.
                            let x0 = gx * p + ox, first = max(0, -x0), last = min(p, width - x0)
                            for ky in 0..<p {
                                let y = gy * p + ky + oy
                                if y < 0 || y >= height || first >= last {
                                    out.update(repeating: 0, count: p)
                                } else {
                                    if first > 0 { out.update(repeating: 0, count: first) }
                                    (out + first).update(from: plane + y * width + x0 + first, count: last - first)
                                    if last < p { (out + last).update(repeating: 0, count: p - last) }
                                }
                                out += p
                            }
                        }
                    }
                }
            }
        }
    }

    /// tokens = im2col(images)·Wᵀ + bias; `patches` is scratch of `B·gh·gw·P·p·p` floats, kept for backward.
    public static func forward(
        tokens: UnsafeMutablePointer<Float>, patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patchSize p: Int, embedDim: Int, shift: Int = 0
    ) {
        im2col(patches: patches, images: images, batch: batch, channels: channels, height: height, width: width,
               patchSize: p, shift: shift)
        let count = batch * (height / p) * (width / p)
        Linear.forward(output: tokens, input: patches, weight: weight, bias: bias,
                       rows: count, inputSize: planeOffsets(shift: shift).count * channels * p * p, outputSize: embedDim)
    }

    /// Accumulates dWeight and dBias (images carry no gradient); `channels` is the number of planes P.
    public static func backward(
        dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>,
        dTokens: UnsafePointer<Float>, patches: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        patchCount: Int, channels: Int, patchSize p: Int, embedDim: Int
    ) {
        Linear.backward(dInput: nil, dWeight: dWeight, dBias: dBias, dOutput: dTokens, input: patches, weight: weight,
                        rows: patchCount, inputSize: channels * p * p, outputSize: embedDim)
    }
}
