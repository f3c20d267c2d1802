/// Patch embedding: the stride-p convolution of `PatchEmbed.proj` as im2col + GEMM.
///
/// Shapes: images `(B, Cin, H, W)` (NCHW, as PyTorch), patches `(B, gh·gw, Cin·p·p)` with the
/// column order `(c, ky, kx)` of the conv weight `(D, Cin, p, p)`, output tokens `(B, gh·gw, D)`.
/// gh = H / p and gw = W / p, rounded down as a stride-p convolution does.
public enum PatchEmbedding {
    /// Copies each p×p patch into a row of `patches`.
    public static func im2col(
        patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patchSize p: Int
    ) {
        let gh = height / p, gw = width / p
        let rowLength = channels * p * p
        Parallel.forEachRange(batch * gh, grain: 8) { range in
            for bgy in range {
                let b = bgy / gh, gy = bgy % gh
                for gx in 0..<gw {
                    var out = patches + ((b * gh + gy) * gw + gx) * rowLength
                    for ch in 0..<channels {
                        for ky in 0..<p {
                            let source = images + ((b * channels + ch) * height + gy * p + ky) * width + gx * p
                            out.update(from: source, count: p)
                            out += p
                        }
                    }
                }
            }
        }
    }

    /// tokens = im2col(images)·Wᵀ + bias; `patches` is scratch of `B·gh·gw·Cin·p·p` floats, kept for backward.
    public static func forward(
        tokens: UnsafeMutablePointer<Float>, patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patchSize p: Int, embedDim: Int
    ) {
        im2col(patches: patches, images: images, batch: batch, channels: channels, height: height, width: width, patchSize: p)
        let count = batch * (height / p) * (width / p)
        Linear.forward(output: tokens, input: patches, weight: weight, bias: bias,
                       rows: count, inputSize: channels * p * p, outputSize: embedDim)
    }

    /// Accumulates dWeight and dBias (images carry no gradient).
    public static func backward(
        dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>,
        dTokens: UnsafePointer<Float>, patches: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        patchCount: Int, channels: Int, patchSize p: Int, embedDim: Int
    ) {
        Linear.backward(dInput: nil, dWeight: dWeight, dBias: dBias, dOutput: dTokens, input: patches, weight: weight,
                        rows: patchCount, inputSize: channels * p * p, outputSize: embedDim)
    }
}
