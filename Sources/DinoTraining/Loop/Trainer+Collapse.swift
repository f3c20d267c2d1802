import DinoKernels
import DinoModel
import Foundation

/// Training stopped because the collapse monitor fired and the recipe's `on_collapse` is `stop` or
/// `restart`. `description` is the one-line error with the advice.
public struct TrainingCollapse: Error, CustomStringConvertible {
    /// The step at which the monitor fired, and the step of the last checkpoint written before it.
    public let step: Int, checkpointStep: Int
    /// The monitor's warning (what collapsed, and the usual remedies).
    public let warning: String
    let output: URL

    public var description: String {
        "training stopped at step \(step) because the teacher collapsed; the checkpoint of step \(checkpointStep) is kept in \(output.path). \(warning). Then start again with those settings, or continue with dino train --resume --output \(output.path) --set KEY=VALUE; on_collapse=restart does this by itself"
    }
}

extension Trainer {
    /// The last checkpoint written while the monitor saw a healthy teacher (`on_collapse: restart` only).
    public static let healthyCheckpointName = "checkpoint-healthy.safetensors"
    /// Where the state of a run that collapsed before any healthy checkpoint is kept when it restarts.
    public static let collapsedCheckpointName = "checkpoint-collapsed.safetensors"
    /// How many times `on_collapse: restart` restarts one run before it stops as `stop` would.
    public static let maximumRestarts = 2

    /// Keeps a copy of the checkpoint just written as the healthy one, when the recipe restarts on collapse
    /// and the last 50 steps look healthy.
    func keepHealthyCheckpoint(_ monitor: CollapseMonitor) throws {
        guard recipe.on_collapse == "restart", communicator.isPrimary, monitor.looksHealthy else { return }
        try writeAtomically(readInputFile(checkpointURL, what: "checkpoint"), to: output.appendingPathComponent(Self.healthyCheckpointName))
    }

    /// `on_collapse: restart`: a trainer for the same run folder with half the peak lr and twice the lr
    /// warm-up (at least `Recipe.warmupFloorSteps`), continuing from the last healthy checkpoint, or from
    /// the start when there is none (the collapsed state is kept as `checkpoint-collapsed.safetensors`,
    /// and the time box keeps only what is left of it). Returns the trainer and a line saying what it did.
    public func restarted(after collapse: TrainingCollapse) throws -> (trainer: Trainer, message: String) {
        var next = recipe
        next.lr = recipe.lr / 2
        let warmup = recipe.warmupIterations(iterationsPerEpoch: iterationsPerEpoch, iterations: totalSteps)
        next.warmup_steps = max(2 * warmup, Recipe.warmupFloorSteps)
        let changes = String(format: "lr %g -> %g, warmup_steps %d -> %d", recipe.lr, next.lr, warmup, next.warmup_steps)
        let healthy = output.appendingPathComponent(Self.healthyCheckpointName)
        if FileManager.default.fileExists(atPath: healthy.path) {
            try writeAtomically(readInputFile(healthy, what: "checkpoint"), to: checkpointURL)
            let trainer = try Trainer(recipe: next, output: output, resume: true, communicator: communicator)
            return (trainer, "restarting from the last healthy checkpoint (step \(trainer.step)) with \(changes) (on_collapse: restart)")
        }
        if FileManager.default.fileExists(atPath: checkpointURL.path) {
            let kept = output.appendingPathComponent(Self.collapsedCheckpointName)
            try? FileManager.default.removeItem(at: kept)
            try FileManager.default.moveItem(at: checkpointURL, to: kept)
        }
        if recipe.max_minutes > 0 { next.max_minutes = max(recipe.max_minutes - trainedSeconds / 60, 0.5) }
        let trainer = try Trainer(recipe: next, output: output, resume: false, communicator: communicator)
        return (trainer, "restarting from the start (no healthy checkpoint yet) with \(changes)"
                + (recipe.max_minutes > 0 ? String(format: ", max_minutes %g for what is left of the box", next.max_minutes) : "")
                + " (on_collapse: restart)")
    }
}

extension CollapseMonitor {
    /// The last 50 steps are neither flat at ln(out_dim) nor on one prototype.
    public var looksHealthy: Bool {
        guard window.count == 50 else { return false }
        let means = windowMeans
        return !isFlat(means) && !isOnOnePrototype(means)
    }
}

/// Detects the two collapse modes over a window of steps: uniform (loss pinned at ln K, teacher as flat
/// as possible, nothing for the student to learn) and one-hot (teacher entropy near 0 and KL near 0).
public struct CollapseMonitor {
    public let outDim: Int
    var window: [LossStatistics] = []
    var warned = false

    public init(outDim: Int) { self.outDim = outDim }

    /// Mean loss, teacher entropy and KL over a window of steps.
    typealias Means = (loss: Float, entropy: Float, kl: Float)

    /// The window's means, taken once per step and passed to both collapse tests.
    var windowMeans: Means {
        let n = Float(max(window.count, 1))
        return (window.map(\.loss).reduce(0, +) / n, window.map(\.teacherEntropy).reduce(0, +) / n,
                window.map(\.kullbackLeibler).reduce(0, +) / n)
    }
    /// Uniform collapse: the loss at ln(out_dim) and nothing for the student to learn.
    func isFlat(_ means: Means) -> Bool {
        let lnK = log(Float(outDim))
        return abs(means.loss - lnK) < 0.002 * lnK && means.kl < 0.01
    }
    /// One-hot collapse: the teacher's entropy and the KL near 0.
    func isOnOnePrototype(_ means: Means) -> Bool { means.entropy < 0.05 && means.kl < 0.01 }

    /// Returns a warning (once) when the last 50 steps, after `minimumSteps`, look collapsed.
    public mutating func observe(_ s: LossStatistics, step: Int, minimumSteps: Int) -> String? {
        window.append(s)
        if window.count > 50 { window.removeFirst() }
        guard !warned, step >= minimumSteps, window.count == 50 else { return nil }
        let lnK = log(Float(outDim))
        let means = windowMeans
        let (meanLoss, meanEntropy, meanKL) = means
        if isFlat(means) {
            warned = true
            return String(format: "collapse: the loss has been stuck at ln(out_dim) = %.4f for 50 steps (loss %.4f, teacher entropy %.4f, KL %.5f): every output is uniform. Usual remedies: a lower teacher_temp (0.04) or warm it up more slowly, a lower momentum_teacher (0.99-0.996) so the teacher moves, fewer prototypes (out_dim), more local crops, or a higher lr", lnK, meanLoss, meanEntropy, meanKL)
        }
        if isOnOnePrototype(means) {
            warned = true
            return String(format: "collapse: the teacher puts all its mass on one prototype (teacher entropy %.4f, KL %.5f for 50 steps). Usual remedies: keep centering on (center_momentum 0.9), a higher teacher_temp, a lower lr or a longer warmup_epochs", meanEntropy, meanKL)
        }
        return nil
    }
}
