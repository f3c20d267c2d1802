import Foundation

/// The exact (erf) GELU: `y = x·Φ(x) = ½x(1 + erf(x/√2))`, as `nn.GELU()` with its default.
/// Elementwise over `count` values.
public enum GELU {
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            for i in range {
                let x = input[i]
                output[i] = 0.5 * x * (1 + erff(x * 0.70710678118654752))
            }
        }
    }

    /// dInput += dOutput·(Φ(x) + x·φ(x)), φ the standard normal density.
    public static func backward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            for i in range {
                let x = input[i]
                let cdf = 0.5 * (1 + erff(x * 0.70710678118654752))
                let pdf = expf(-0.5 * x * x) * 0.39894228040143268
                dInput[i] += dOutput[i] * (cdf + x * pdf)
            }
        }
    }

    /// Overwrites `gradient` (holding dOutput) with dInput: the in-place form used by the MLP backward.
    public static func backwardInPlace(gradient: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 16384) { range in
            for i in range {
                let x = input[i]
                let cdf = 0.5 * (1 + erff(x * 0.70710678118654752))
                let pdf = expf(-0.5 * x * x) * 0.39894228040143268
                gradient[i] *= cdf + x * pdf
            }
        }
    }
}
