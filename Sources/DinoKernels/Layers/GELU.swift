import CDinoKernels

/// The exact (erf) GELU: `y = x·Φ(x) = ½x(1 + erf(x/√2))`, as `nn.GELU()` with its default.
/// Elementwise over `count` values. The C kernel evaluates erf as a rational polynomial
/// (absolute error < 5e-7, the same order as `erff`), eight values per AVX2 instruction.
public enum GELU {
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            dino_gelu_forward(output + range.lowerBound, input + range.lowerBound, range.count)
        }
    }

    /// dInput += dOutput·(Φ(x) + x·φ(x)), φ the standard normal density.
    public static func backward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            let i = range.lowerBound
            dino_gelu_backward(dInput + i, dOutput + i, input + i, range.count, 1)
        }
    }

    /// Overwrites `gradient` (holding dOutput) with dInput: the in-place form used by the MLP backward.
    public static func backwardInPlace(gradient: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            let i = range.lowerBound
            dino_gelu_backward(gradient + i, gradient + i, input + i, range.count, 0)
        }
    }
}
