import CDinoKernels
import DinoKernels
import Foundation

/// Statistics of one loss evaluation.
public struct LossStatistics: Sendable {
    public var loss: Float
    /// Mean entropy of the teacher's targets (centered and sharpened, or Sinkhorn-Knopp) (nats).
    public var teacherEntropy: Float
    /// Mean over the loss terms of cross-entropy minus the teacher's entropy: KL(teacher ‖ student),
    /// the part of the loss the student can reduce.
    public var kullbackLeibler: Float
    /// The weighted KoLeo term (0 when off), reported apart from the DINO loss.
    public var koleo: Float
    /// The weighted masked-patch (iBOT) term (0 when off), reported apart from the DINO loss.
    public var maskedPatch: Float = 0

    public init(loss: Float, teacherEntropy: Float, kullbackLeibler: Float, koleo: Float = 0) {
        self.loss = loss; self.teacherEntropy = teacherEntropy; self.kullbackLeibler = kullbackLeibler; self.koleo = koleo
    }
}

/// The DINO loss (official `DINOLoss`): for teacher views iq ∈ {0, 1} and every student view v ≠ iq,
/// the batch mean of `−Σ_k q_iq·log p_v`, averaged over the `2·(V−1)` terms, with
/// `q = softmax((t − center)/τ_t)` and `p_v = softmax(s_v/τ_s)`. The center is an EMA of the batch
/// mean of the raw teacher logits, updated after the loss.
///
/// Shapes: student logits are views-major `(V·B, K)` (the 2 global views first); teacher logits `(2B, K)`.
///
/// With `teacherTargets == .sinkhornKnopp` (DINOv2's option) the teacher's targets are
/// `SinkhornKnopp.normalize` of the raw logits over all 2B teacher rows instead of the centered
/// softmax; the center is still updated (it is saved and logged) but not used.
public final class DINOLoss {
    /// How the teacher's logits become targets.
    public enum TeacherTargets: String, Sendable, CaseIterable {
        /// `softmax((t − center)/τ_t)` (DINO).
        case centering
        /// Three Sinkhorn-Knopp iterations over the batch at τ_t (DINOv2's `sinkhorn_knopp`).
        case sinkhornKnopp = "sinkhorn_knopp"
    }

    public let outDim: Int
    public let studentTemperature: Float
    public let centerMomentum: Float
    public let teacherTargets: TeacherTargets
    /// The center `(K)`, saved in checkpoints.
    public let center: FloatBuffer
    var teacherProbabilities = FloatBuffer(count: 0)
    var teacherLogNormalizers = FloatBuffer(count: 0)
    var studentLogProbabilities = FloatBuffer(count: 0)
    var sinkhornScratch: [Double] = []
    /// The processes of a data-parallel run: the center's batch mean and Sinkhorn-Knopp's sums are over all of them.
    public var communicator: (any Communicator)?
    /// Per student row, its cross-entropies against the two teacher views `(V·B, 2)`; per teacher row, its entropy `(2B)`.
    var crossEntropy: [Double] = [], entropy: [Double] = []

    public init(outDim: Int, studentTemperature: Float = 0.1, centerMomentum: Float = 0.9,
                teacherTargets: TeacherTargets = .centering) {
        self.outDim = outDim
        self.studentTemperature = studentTemperature
        self.centerMomentum = centerMomentum
        self.teacherTargets = teacherTargets
        center = FloatBuffer(count: outDim)
    }

    /// Computes the loss and writes dL/d(student logits) `(V·B, K)` into `dStudent` (overwritten).
    /// Does not update the center (call `updateCenter` after, as the official order).
    public func forwardBackward(student: UnsafePointer<Float>, teacher: UnsafePointer<Float>,
                                dStudent: UnsafeMutablePointer<Float>, views: Int, batch b: Int,
                                teacherTemperature: Float) -> LossStatistics {
        let k = outDim
        if teacherProbabilities.count != 2 * b * k { teacherProbabilities = FloatBuffer(count: 2 * b * k) }
        if studentLogProbabilities.count != views * b * k { studentLogProbabilities = FloatBuffer(count: views * b * k) }
        if teacherLogNormalizers.count != 2 * b { teacherLogNormalizers = FloatBuffer(count: 2 * b) }
        let q = teacherProbabilities.pointer, logP = studentLogProbabilities.pointer, lse = teacherLogNormalizers.pointer
        switch teacherTargets {
        case .centering:
            Softmax.forward(output: q, input: teacher, shift: center.pointer, temperature: teacherTemperature, rows: 2 * b, columns: k,
                            logNormalizers: lse)
        case .sinkhornKnopp:
            if sinkhornScratch.count != (2 * b + 1) * k { sinkhornScratch = [Double](repeating: 0, count: (2 * b + 1) * k) }
            sinkhornScratch.withUnsafeMutableBufferPointer { scratch in
                SinkhornKnopp.normalize(output: q, input: teacher, temperature: teacherTemperature, rows: 2 * b, columns: k,
                                        scratch: scratch.baseAddress!, communicator: communicator)
            }
        }
        Softmax.forward(output: logP, input: student, temperature: studentTemperature, rows: views * b, columns: k, logarithm: true)
        let terms = 2 * (views - 1)
        // Per row of each student view: cross-entropies against each teacher view, and the gradient.
        if crossEntropy.count != views * b * 2 { crossEntropy = [Double](repeating: 0, count: views * b * 2) }
        if entropy.count != 2 * b { entropy = [Double](repeating: 0, count: 2 * b) }
        let scale = 1 / (Float(terms) * Float(b) * studentTemperature)
        crossEntropy.withUnsafeMutableBufferPointer { ce in
            entropy.withUnsafeMutableBufferPointer { h in
                let ce = ce.baseAddress!, h = h
                // Per student row: its cross-entropies against both teacher views, and
                // d/ds_v = scale·(n_v·p_v − Σ_{iq≠v} q_iq), n_v = number of teacher views ≠ v.
                Parallel.forEachRange(views * b) { rows in
                    for row in rows {
                        let i = row % b
                        dino_cross_entropy_row(dStudent + row * k, ce + 2 * row, ce + 2 * row + 1, logP + row * k,
                                               q + i * k, q + (b + i) * k, k, Int32(min(row / b, 2)), scale)
                    }
                }
                // The teacher's entropies: for softmax targets H = log Σ exp y − Σ q·y with y = (t − c)/τ_t.
                let inverseTemperature = Double(1 / teacherTemperature)
                Parallel.forEachRange(2 * b) { rows in
                    for row in rows {
                        let qr = q + row * k
                        var e: Double = 0
                        switch teacherTargets {
                        case .centering:
                            let t = teacher + row * k, c = UnsafePointer(center.pointer)
                            var qy: Double = 0
                            for j in 0..<k { qy += Double(qr[j]) * Double(t[j] - c[j]) }
                            e = Double(lse[row]) - qy * inverseTemperature
                        case .sinkhornKnopp:
                            for j in 0..<k where qr[j] > 0 { e -= Double(qr[j]) * log(Double(qr[j])) }
                        }
                        h[row] = e
                    }
                }
            }
        }
        var total = 0.0, klTotal = 0.0
        for iq in 0..<2 {
            for v in 0..<views where v != iq {
                var term = 0.0, teacherH = 0.0
                for i in 0..<b { term += crossEntropy[2 * (v * b + i) + iq]; teacherH += entropy[iq * b + i] }
                total += term / Double(b)
                klTotal += (term - teacherH) / Double(b)
            }
        }
        return LossStatistics(loss: Float(total / Double(terms)),
                              teacherEntropy: Float(entropy.reduce(0, +) / Double(2 * b)),
                              kullbackLeibler: Float(klTotal / Double(terms)))
    }

    /// center ← m·center + (1 − m)·mean over rows of the raw teacher logits `(rows, K)`.
    public func updateCenter(teacher: UnsafePointer<Float>, rows: Int) {
        updateCenterEMA(center.pointer, teacher: teacher, rows: rows, columns: outDim, momentum: centerMomentum,
                        communicator: communicator)
    }
}

/// center ← m·center + (1 − m)·(1/rows)·Σ_r teacher[r] `(K)`, per column in row order (the same bits on
/// any thread count): the DINO loss's center and the masked-patch loss's.
/// In a data-parallel run (`communicator` of more than one process) the batch mean is over every rank's
/// rows: the column sums are summed across ranks first (the official `update_center`'s all-reduce).
func updateCenterEMA(_ center: UnsafeMutablePointer<Float>, teacher: UnsafePointer<Float>, rows: Int, columns k: Int,
                     momentum m: Float, communicator: (any Communicator)? = nil) {
    // The column sums, then the row count, in pool scratch (a step allocates nothing once warm).
    let scratch = ScratchPool.shared.take(count: k + 1)
    defer { ScratchPool.shared.give(scratch) }
    let sums = scratch.pointer
    Parallel.forEachRange((k + 255) / 256) { blocks in
        for j in (blocks.lowerBound * 256)..<min(k, blocks.upperBound * 256) {
            var s: Float = 0
            for r in 0..<rows { s += teacher[r * k + j] }
            sums[j] = s
        }
    }
    sums[k] = Float(rows)
    if let communicator, communicator.size > 1 { communicator.sum(sums, count: k + 1) }
    let count = sums[k]
    guard count > 0 else { return }
    Parallel.forEachRange((k + 255) / 256) { blocks in
        for j in (blocks.lowerBound * 256)..<min(k, blocks.upperBound * 256) {
            center[j] = center[j] * m + (sums[j] / count) * (1 - m)
        }
    }
}
