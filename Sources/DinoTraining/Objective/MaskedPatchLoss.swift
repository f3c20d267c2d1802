import DinoKernels
import Foundation

/// Which patches of the student's global crops are masked (DINOv2's `collate_data_and_cast` with
/// iBOT's random masking): of the `images` crops, `⌊images·probability⌋` are masked, the i-th of
/// them with a ratio drawn uniformly from the i-th of `⌊images·probability⌋` equal slices of
/// `[minimum, maximum]` (so the ratios span the range in every batch), `⌊patches·ratio⌋` patches
/// chosen uniformly without replacement; which crops get masked is a random permutation.
public struct PatchMasking: Sendable, Equatable {
    public var probability: Double
    public var minimumRatio: Double, maximumRatio: Double

    public init(probability: Double, minimumRatio: Double, maximumRatio: Double) {
        self.probability = probability; self.minimumRatio = minimumRatio; self.maximumRatio = maximumRatio
    }

    /// Writes the mask `(images, patches)` (1: masked) into `mask`.
    public func sample(mask: UnsafeMutablePointer<UInt8>, images: Int, patches: Int, generator g: inout RandomGenerator) {
        mask.update(repeating: 0, count: images * patches)
        let masked = Int(Double(images) * probability)
        guard masked > 0 else { return }
        var order = Array(0..<images)
        g.shuffle(&order)
        var positions = Array(0..<patches)
        for i in 0..<masked {
            let low = minimumRatio + (maximumRatio - minimumRatio) * Double(i) / Double(masked)
            let high = minimumRatio + (maximumRatio - minimumRatio) * Double(i + 1) / Double(masked)
            let count = min(patches, Int(Double(patches) * g.uniform(low, high)))
            // A partial Fisher-Yates shuffle picks `count` distinct positions.
            for j in 0..<count {
                positions.swapAt(j, j + g.nextInt(below: patches - j))
                mask[order[i] * patches + positions[j]] = 1
            }
        }
    }
}

/// iBOT's masked-patch distillation loss (DINOv2's `iBOTPatchLoss`): for every masked patch r of
/// student crop i, the cross-entropy `−Σ_k q_r·log p_r` between the teacher's centered, sharpened
/// output for the same (unmasked) patch, `q = softmax((t − c₂)/τ_t)`, and the student's
/// `p = softmax(s/τ_s)`; each crop's patches are averaged, then the sum is divided by the number of
/// crops (masked or not), `L = (1/I) Σ_i (1/m_i) Σ_{r ∈ i} CE_r`. The patch center c₂ is its own EMA of
/// the batch mean of the teacher's masked-patch logits, updated after the loss.
///
/// Shapes: student and teacher logits `(R, K)` for the R masked patches; `crops` `(R)`: the crop each
/// row belongs to.
public final class MaskedPatchLoss {
    public let outDim: Int
    public let studentTemperature: Float
    public let centerMomentum: Float
    /// The patch center c₂ `(K)`, saved in checkpoints.
    public let center: FloatBuffer
    var teacherProbabilities = FloatBuffer(count: 0), studentLogProbabilities = FloatBuffer(count: 0)
    var teacherLogNormalizers = FloatBuffer(count: 0)
    var crossEntropy: [Double] = [], entropy: [Double] = []

    public init(outDim: Int, studentTemperature: Float = 0.1, centerMomentum: Float = 0.9) {
        self.outDim = outDim; self.studentTemperature = studentTemperature; self.centerMomentum = centerMomentum
        center = FloatBuffer(count: outDim)
    }

    /// Returns (loss, mean teacher entropy) and writes weight·dL/d(student logits) `(R, K)` into
    /// `dStudent` (overwritten). `crops` is the number of crops I the loss averages over.
    public func forwardBackward(student: UnsafePointer<Float>, teacher: UnsafePointer<Float>,
                                dStudent: UnsafeMutablePointer<Float>, rows: Int, rowCrops: [Int], crops: Int,
                                teacherTemperature: Float, weight: Float = 1) -> (loss: Float, teacherEntropy: Float) {
        precondition(rowCrops.count == rows)
        guard rows > 0 else { return (0, 0) }
        let k = outDim
        if teacherProbabilities.count < rows * k {
            teacherProbabilities = FloatBuffer(count: rows * k); studentLogProbabilities = FloatBuffer(count: rows * k)
            teacherLogNormalizers = FloatBuffer(count: rows)
        }
        let q = teacherProbabilities.pointer, logP = studentLogProbabilities.pointer, lse = teacherLogNormalizers.pointer
        Softmax.forward(output: q, input: teacher, shift: center.pointer, temperature: teacherTemperature, rows: rows, columns: k,
                        logNormalizers: lse)
        Softmax.forward(output: logP, input: student, temperature: studentTemperature, rows: rows, columns: k, logarithm: true)
        // Each row's weight: 1 / (patches masked in its crop · crops).
        var perCrop = [Int](repeating: 0, count: crops)
        for c in rowCrops { perCrop[c] += 1 }
        let weights = rowCrops.map { 1 / (Double(perCrop[$0]) * Double(crops)) }
        if crossEntropy.count < rows { crossEntropy = [Double](repeating: 0, count: rows); entropy = crossEntropy }
        crossEntropy.withUnsafeMutableBufferPointer { ce in
            entropy.withUnsafeMutableBufferPointer { h in
                let ce = ce, h = h
                Parallel.forEachRange(rows) { range in
                    for r in range {
                        let lp = logP + r * k, qr = q + r * k, d = dStudent + r * k, t = teacher + r * k, center = center.pointer
                        // The teacher's entropy from its log-normalizer: H = log Σ exp y − Σ q·y, y = (t − c₂)/τ_t.
                        var c: Double = 0, qy: Double = 0
                        for j in 0..<k {
                            c -= Double(qr[j] * lp[j])
                            qy += Double(qr[j]) * Double(t[j] - center[j])
                        }
                        ce[r] = c; h[r] = Double(lse[r]) - qy / Double(teacherTemperature)
                        // d/ds = weight·w_r·(p − q)/τ_s
                        let scale = weight * Float(weights[r]) / studentTemperature
                        for j in 0..<k { d[j] = scale * (expf(lp[j]) - qr[j]) }
                    }
                }
            }
        }
        var loss = 0.0, totalEntropy = 0.0
        for r in 0..<rows { loss += weights[r] * crossEntropy[r]; totalEntropy += entropy[r] }
        return (Float(loss), Float(totalEntropy / Double(rows)))
    }

    /// c₂ ← m·c₂ + (1 − m)·mean over rows of the teacher's masked-patch logits `(rows, K)`; nothing
    /// when no patch was masked (in a data-parallel run: on any process; the mean is over all of them).
    public func updateCenter(teacher: UnsafePointer<Float>, rows: Int) {
        guard rows > 0 || communicator != nil else { return }
        updateCenterEMA(center.pointer, teacher: teacher, rows: rows, columns: outDim, momentum: centerMomentum,
                        communicator: communicator)
    }

    /// The processes of a data-parallel run: the center's mean is over every process's masked patches.
    public var communicator: (any Communicator)?
}
