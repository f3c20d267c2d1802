import DinoData
import DinoKernels
import DinoModel
import Foundation

/// Everything a run needs to continue exactly where it stopped: student, teacher, AdamW moments and
/// per-tensor step counts, the loss center, and the global step (the data order, augmentations and
/// drop-path masks are all derived from the seed and the step); with `max_minutes`, the training
/// seconds spent and the steps the schedules were fitted to.
public struct TrainingCheckpoint {
    public static let fileName = "checkpoint.safetensors"

    /// Writes the training state atomically to `url`.
    static func save(to url: URL, trainer: Trainer) throws {
        let layout = trainer.layout
        var all = tensors(layout: layout, parameters: trainer.student.pointer, prefix: "student.")
        all += tensors(layout: layout, parameters: trainer.teacher.pointer, prefix: "teacher.")
        all += tensors(layout: layout, parameters: trainer.optimizer.firstMoment.pointer, prefix: "optimizer.exp_avg.")
        all += tensors(layout: layout, parameters: trainer.optimizer.secondMoment.pointer, prefix: "optimizer.exp_avg_sq.")
        all.append(NamedTensor(name: "dino_loss.center", shape: [1, trainer.head.outDim], values: trainer.loss.center.array))
        if let patchLoss = trainer.model.patchLoss {
            all.append(NamedTensor(name: "ibot_patch_loss.center", shape: [1, 1, trainer.head.outDim], values: patchLoss.center.array))
        }
        var metadata: [String: String] = [
            "format": "pt",
            "dino.kind": "training",
            "dino.config": try encodeJSON(trainer.config),
            "dino.head": try encodeJSON(trainer.head),
            "dino.mean": try encodeJSON(trainer.mean),
            "dino.std": try encodeJSON(trainer.std),
            "dino.step": String(trainer.step),
            "dino.iterations_per_epoch": String(trainer.iterationsPerEpoch),
            "dino.optimizer_steps": try encodeJSON(trainer.optimizer.steps),
            "dino.recipe": trainer.recipe.yaml,
            "dino.trained_seconds": String(trainer.trainedSeconds),
        ]
        if let steps = trainer.scheduledSteps { metadata["dino.scheduled_steps"] = String(steps) }
        if let resize = trainer.evaluationResize { metadata[BackboneCheckpoint.evaluationResizeKey] = String(resize) }
        if let start = trainer.initialWeights { metadata[InitialWeights.freshHeadKey] = String(start.freshHead) }
        if let pace = trainer.paceStart {
            metadata["dino.pace_step"] = String(pace.step)
            metadata["dino.pace_seconds"] = String(pace.seconds)
        }
        try SafeTensors.write(all, metadata: metadata, to: url)
    }

    /// Restores the training state from `url` into `trainer`, checking that it was made by the same
    /// architecture and schedule.
    static func restore(from url: URL, into trainer: Trainer) throws {
        try restore(SafeTensors.read(url), url: url, into: trainer)
    }

    static func restore(_ file: SafeTensors.File, url: URL, into trainer: Trainer) throws {
        guard file.metadata["dino.kind"] == "training" else {
            throw DinoError("\(url.path) is not a training checkpoint (dino.kind is \(file.metadata["dino.kind"] ?? "missing"))")
        }
        let config = try decodeJSON(ViTConfig.self, file.metadata["dino.config"] ?? "", what: "dino.config in \(url.path)")
        let head = try decodeJSON(HeadConfig.self, file.metadata["dino.head"] ?? "", what: "dino.head in \(url.path)")
        guard config == trainer.config, head == trainer.head else {
            throw DinoError("cannot resume from \(url.path): it was trained with a different architecture (\(config.arch) \(config.embedDim)x\(config.depth), patch \(config.patchSize), out_dim \(head.outDim)) than this recipe (\(trainer.config.arch) \(trainer.config.embedDim)x\(trainer.config.depth), patch \(trainer.config.patchSize), out_dim \(trainer.head.outDim)); use the recipe it was trained with, or a new output folder")
        }
        let savedIterations = Int(file.metadata["dino.iterations_per_epoch"] ?? "") ?? -1
        guard savedIterations == trainer.iterationsPerEpoch else {
            throw DinoError("cannot resume from \(url.path): it has \(savedIterations) steps per epoch, this recipe and data give \(trainer.iterationsPerEpoch) (batch_size or the data changed)")
        }
        let layout = trainer.layout
        try loadTensors(file, prefix: "student.", into: trainer.student.pointer, layout: layout, path: url.path)
        try loadTensors(file, prefix: "teacher.", into: trainer.teacher.pointer, layout: layout, path: url.path)
        try loadTensors(file, prefix: "optimizer.exp_avg.", into: trainer.optimizer.firstMoment.pointer, layout: layout, path: url.path)
        try loadTensors(file, prefix: "optimizer.exp_avg_sq.", into: trainer.optimizer.secondMoment.pointer, layout: layout, path: url.path)
        guard let center = file.tensor("dino_loss.center"), center.values.count == trainer.head.outDim else {
            throw DinoError("\(url.path) has no dino_loss.center of \(trainer.head.outDim) values")
        }
        trainer.loss.center.pointer.update(from: center.values, count: center.values.count)
        if let patchLoss = trainer.model.patchLoss {
            guard let center = file.tensor("ibot_patch_loss.center"), center.values.count == trainer.head.outDim else {
                throw DinoError("\(url.path) has no ibot_patch_loss.center of \(trainer.head.outDim) values")
            }
            patchLoss.center.pointer.update(from: center.values, count: center.values.count)
        }
        trainer.optimizer.steps = try decodeJSON([Int].self, file.metadata["dino.optimizer_steps"] ?? "",
                                                 what: "dino.optimizer_steps in \(url.path)")
        let allSteps = trainer.recipe.epochs * trainer.iterationsPerEpoch
        guard trainer.optimizer.steps.count == layout.entries.count, let step = Int(file.metadata["dino.step"] ?? ""),
              (0...allSteps).contains(step), trainer.optimizer.steps.allSatisfy({ (0...step).contains($0) }) else {
            throw DinoError("\(url.path): its step and optimizer state do not fit this recipe (at most \(allSteps) steps); the checkpoint may be corrupt")
        }
        trainer.step = step
        // Absent in checkpoints from before the time box; a run without max_minutes ignores both.
        let seconds = Double(file.metadata["dino.trained_seconds"] ?? "") ?? 0
        let scheduled = trainer.recipe.max_minutes > 0 ? file.metadata["dino.scheduled_steps"].flatMap { Int($0) } : nil
        guard seconds.isFinite, seconds >= 0, scheduled.map({ (max(1, step)...allSteps).contains($0) }) ?? true else {
            throw DinoError("\(url.path): its time-box state (dino.trained_seconds, dino.scheduled_steps) is out of range; the checkpoint may be corrupt")
        }
        trainer.trainedSeconds = seconds
        trainer.scheduledSteps = scheduled
        if trainer.scheduledSteps != nil, let paceStep = file.metadata["dino.pace_step"].flatMap({ Int($0) }),
           let paceSeconds = file.metadata["dino.pace_seconds"].flatMap({ Double($0) }),
           (0...step).contains(paceStep), paceSeconds.isFinite, paceSeconds >= 0 {
            trainer.paceStart = (paceStep, paceSeconds)
        }
    }
}

extension Trainer {
    /// Restores the training state from a checkpoint file already read (`path` names it in errors);
    /// a file of another architecture or schedule, or with out-of-range state, is an error.
    public func restore(_ file: SafeTensors.File, path: String) throws {
        try TrainingCheckpoint.restore(file, url: URL(fileURLWithPath: path), into: self)
    }
}

/// A flag another thread (a signal handler) sets to ask the loop to save and stop.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public func request() { lock.lock(); value = true; lock.unlock() }
    public var isRequested: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
