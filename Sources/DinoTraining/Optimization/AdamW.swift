import CDinoKernels
import DinoKernels
import DinoModel
import Foundation

/// AdamW as `torch.optim.AdamW` (β = (0.9, 0.999), eps 1e-8, decoupled decay `p ← p·(1 − lr·wd)`,
/// bias correction with a step count per tensor), over the official DINO parameter groups: weight
/// decay only for tensors that are not biases and have more than one dimension.
///
/// The step count is per tensor because a tensor the optimizer skips (the last layer while frozen;
/// the official code sets its grad to None) does not advance its own count.
public final class AdamW {
    public let layout: ParameterLayout
    public let firstMoment: FloatBuffer
    public let secondMoment: FloatBuffer
    /// Steps taken by each tensor of `layout.entries`.
    public var steps: [Int]
    public let beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
    /// Reused across steps (a step allocates nothing): the norms it returns, and l2Norm's chunk sums.
    var norms: [Float] = []
    var partialSums: [Double] = []

    public init(layout: ParameterLayout) {
        self.layout = layout
        firstMoment = FloatBuffer(count: layout.count)
        secondMoment = FloatBuffer(count: layout.count)
        steps = Array(repeating: 0, count: layout.entries.count)
    }

    /// Clips each gradient tensor to `clip` L2 norm (0: no clipping) as the official `clip_gradients`
    /// (`coef = clip/(‖g‖ + 1e-6)`, applied in place when < 1), then takes one AdamW step on every
    /// trainable tensor, skipping the last layer when `freezeLastLayer` and everything outside the head
    /// (`head.`) when `freezeBackbone` (those tensors and their teacher copies are left as they are);
    /// outside the head the learning rate is `lr·backboneScale`. Returns the gradient norms before clipping.
    ///
    /// Given a `teacher` (same layout), it also takes the EMA θ_t ← m·θ_t + (1 − m)·θ_s after the step,
    /// in the same pass while the updated student value is still in a register (the same bits as
    /// `updateTeacher` after the step, and one read of the student less).
    @discardableResult
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                     learningRate: Float, weightDecay: Float, clip: Float, freezeLastLayer: Bool, freezeBackbone: Bool = false,
                     backboneScale: Float = 1, teacher: UnsafeMutablePointer<Float>? = nil, teacherMomentum: Float = 0) -> [Float] {
        norms.removeAll(keepingCapacity: true)
        for (index, e) in layout.entries.enumerated() {
            let g = gradients + e.offset, p = parameters + e.offset
            let inHead = e.name.hasPrefix("head.")
            if freezeBackbone && !inHead {
                norms.append(0)
                continue
            }
            let lr = inHead ? learningRate : learningRate * backboneScale
            guard e.isTrainable, !(freezeLastLayer && e.isLastLayer) else {
                norms.append(0)
                if let teacher { updateTeacher(teacher: teacher + e.offset, student: p, count: e.count, momentum: teacherMomentum) }
                continue
            }
            let m = firstMoment.pointer + e.offset, v = secondMoment.pointer + e.offset
            let norm = l2Norm(g, e.count)
            norms.append(norm)
            var gradientScale: Float = 1
            if clip > 0 {
                let coef = clip / (norm + 1e-6)
                if coef < 1 { gradientScale = coef }
            }
            steps[index] += 1
            let t = Float(steps[index])
            let decay: Float = e.decays ? 1 - lr * weightDecay : 1
            let bc1 = 1 - powf(beta1, t), bc2Root = (1 - powf(beta2, t)).squareRoot()
            let stepSize = lr / bc1
            let scalars = DinoAdamWScalars(
                gradientScale: gradientScale, decay: decay, oneMinusBeta1: 1 - beta1, beta2: beta2, oneMinusBeta2: 1 - beta2,
                stepSize: stepSize, secondMomentCorrectionRoot: bc2Root, epsilon: epsilon,
                teacherMomentum: teacherMomentum, oneMinusTeacherMomentum: 1 - teacherMomentum)
            let teacherTensor = teacher.map { $0 + e.offset }
            withUnsafePointer(to: scalars) { scalars in
                Parallel.forEachRange(e.count, grain: 8192) { range in
                    dino_adamw_update(p + range.lowerBound, g + range.lowerBound, m + range.lowerBound, v + range.lowerBound,
                                      teacherTensor.map { $0 + range.lowerBound }, range.count, scalars)
                }
            }
        }
        return norms
    }

    /// ‖x‖₂ summed in Double over fixed 4096-element chunks in order: the same value on any thread count.
    func l2Norm(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let chunks = (n + 4095) / 4096
        if partialSums.count < chunks { partialSums = [Double](repeating: 0, count: chunks) }
        return partialSums.withUnsafeMutableBufferPointer { out in
            let out = out
            Parallel.forEachRange(chunks) { range in
                for c in range {
                    var s: Double = 0
                    for i in (c * 4096)..<min(n, (c + 1) * 4096) { s += Double(x[i]) * Double(x[i]) }
                    out[c] = s
                }
            }
            var total: Double = 0
            for c in 0..<chunks { total += out[c] }
            return Float(total.squareRoot())
        }
    }
}

/// The teacher update after each step: θ_t ← m·θ_t + (1 − m)·θ_s over every parameter.
public func updateTeacher(teacher: UnsafeMutablePointer<Float>, student: UnsafePointer<Float>, count: Int, momentum: Float) {
    let m = momentum
    Parallel.forEachRange(count, grain: 16384) { range in
        for i in range { teacher[i] = teacher[i] * m + (1 - m) * student[i] }
    }
}
