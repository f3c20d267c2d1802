import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation

/// One logged training step (also one line of `log.jsonl`).
public struct StepRecord: Codable, Sendable {
    public var step: Int
    public var epoch: Int
    public var loss: Float
    public var teacher_entropy: Float
    public var kl: Float
    /// The weighted KoLeo term, `koleo_weight` times the regularizer (0 unless `koleo_loss_weight` > 0).
    public var koleo: Float
    /// The KoLeo weight at this step (a cosine when `koleo_loss_weight_end` is set), so that the
    /// regularizer itself is `koleo / koleo_weight`.
    public var koleo_weight: Double = 0
    /// The weighted masked-patch term (0 unless `ibot_loss_weight` > 0).
    public var ibot: Float = 0
    public var lr: Double
    public var wd: Double
    public var momentum: Double
    public var teacher_temp: Double
    public var images_per_s: Double
    public var seconds: Double
    public var eta_s: Double
}

extension StepRecord {
    /// Reads a `log.jsonl` line; `ibot` and `koleo_weight` may be absent (logs written before them).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        step = try c.decode(Int.self, forKey: .step)
        epoch = try c.decode(Int.self, forKey: .epoch)
        loss = try c.decode(Float.self, forKey: .loss)
        teacher_entropy = try c.decode(Float.self, forKey: .teacher_entropy)
        kl = try c.decode(Float.self, forKey: .kl)
        koleo = try c.decode(Float.self, forKey: .koleo)
        koleo_weight = try c.decodeIfPresent(Double.self, forKey: .koleo_weight) ?? 0
        ibot = try c.decodeIfPresent(Float.self, forKey: .ibot) ?? 0
        lr = try c.decode(Double.self, forKey: .lr)
        wd = try c.decode(Double.self, forKey: .wd)
        momentum = try c.decode(Double.self, forKey: .momentum)
        teacher_temp = try c.decode(Double.self, forKey: .teacher_temp)
        images_per_s = try c.decode(Double.self, forKey: .images_per_s)
        seconds = try c.decode(Double.self, forKey: .seconds)
        eta_s = try c.decode(Double.self, forKey: .eta_s)
    }
}

/// What the loop reports as it runs.
public enum TrainingEvent: Sendable {
    case step(StepRecord, totalSteps: Int)
    case message(String)
    case warning(String)
    case knn(epoch: Int, step: Int, top1: Double)
}

public struct TrainingSummary: Sendable {
    public var steps: Int
    public var finalLoss: Float
    public var interrupted: Bool
    public var collapseWarned: Bool
    /// Unreadable images met and left out (`on_bad_image: skip`), each counted once per process.
    public var skippedImages: Int
    public var knn: [(epoch: Int, top1: Double)]
    public var checkpoint: URL
    public var teacherBackbone: URL
    /// The run stopped at `max_minutes` before the steps its schedules were fitted to.
    public var timeBoxReached: Bool = false
}

/// The DINO training loop (official `train_one_epoch`), one step in the official order:
/// schedules → teacher forward (global crops) → student forward (all crops) → loss, then center
/// update → finite check → backward → per-tensor clip, last layer skipped while frozen → AdamW →
/// teacher EMA → log.
public final class Trainer {
    public let recipe: Recipe
    public let output: URL
    /// The processes of a data-parallel run (one: `SingleProcess`); rank 0 writes every file.
    public let communicator: any Communicator
    public let config: ViTConfig
    public let head: HeadConfig
    public var layout: ParameterLayout { model.layout }
    public let mean: [Float], std: [Float]
    /// Model, optimizer and loss state, and the step itself.
    public let model: SelfDistillation
    var student: FloatBuffer { model.student }
    var teacher: FloatBuffer { model.teacher }
    var optimizer: AdamW { model.optimizer }
    var loss: DINOLoss { model.loss }
    let loader: MultiCropLoader
    public let iterationsPerEpoch: Int
    public internal(set) var step = 0
    public let stopFlag = StopFlag()
    var learningRates: [Double], weightDecays: [Double], momenta: [Double], koleoWeights: [Double]
    let teacherTemperatures: [Double]
    /// With `max_minutes`: the steps the schedules were fitted to, once measured (saved with the checkpoint,
    /// so a resumed run keeps the same schedules).
    public internal(set) var scheduledSteps: Int?
    /// Training seconds spent up to the last checkpoint (or now, during `run`), which `max_minutes` counts.
    public internal(set) var trainedSeconds: Double = 0
    /// With `max_minutes`, once fitted: the step and trained seconds the time box measures the pace of the
    /// steps from (the fit, then each check), saved with the checkpoint so that a resumed run checks as
    /// the whole run would.
    public internal(set) var paceStart: (step: Int, seconds: Double)?
    /// Seconds on a monotonic clock; replaceable so tests can time-box deterministically.
    public var clock: () -> Double = { ProcessInfo.processInfo.systemUptime }
    let trainingData: any ImageDataset
    /// The dataset `trainingData` was cut from (itself when `train_subset` is off): k-NN and attention use it.
    public let fullData: any ImageDataset

    /// The published weights the run started from (`init_from`), if any.
    let initialWeights: InitialWeights?
    /// What the run started from, in words (nil: the official initialization).
    public var initialWeightsDescription: String? { initialWeights?.description }

    /// Steps at the start that train the head alone (`freeze_backbone_steps`; automatic with `init_from`
    /// and no head in the file: max(one epoch, 200 steps), at most half of the recipe's epochs, whatever
    /// `max_steps` or the time box cut, so that a run split in parts warms up as the whole run).
    public var frozenBackboneSteps: Int {
        if recipe.freeze_backbone_steps >= 0 { return recipe.freeze_backbone_steps }
        guard let initialWeights, initialWeights.freshHead else { return 0 }
        return min(max(iterationsPerEpoch, 200), recipe.epochs * iterationsPerEpoch / 2)
    }

    public var checkpointURL: URL { output.appendingPathComponent(TrainingCheckpoint.fileName) }
    public var teacherBackboneURL: URL { output.appendingPathComponent("teacher_backbone.safetensors") }
    public var totalSteps: Int {
        let all = scheduledSteps ?? recipe.epochs * iterationsPerEpoch
        return recipe.max_steps > 0 ? min(all, recipe.max_steps) : all
    }

    /// Builds the model, data and state for `recipe`, writing into `output`. With `resume`, continues
    /// from `output/checkpoint.safetensors` when it exists.
    /// - Parameter communicator: the processes of a data-parallel run (see `Trainer+Distributed.swift`).
    public init(recipe: Recipe, output: URL, resume: Bool = false, dataset: (any ImageDataset)? = nil,
                communicator: any Communicator = SingleProcess()) throws {
        try recipe.validate()
        try Trainer.checkDataParallel(recipe: recipe, processes: communicator.size)
        self.recipe = recipe
        self.output = output
        self.communicator = communicator
        // With init_from the architecture (and the head, when the file has one) are the file's.
        // A resumed run reads them from its own checkpoint: the file it started from is not needed again.
        let ownCheckpoint = output.appendingPathComponent(TrainingCheckpoint.fileName)
        let start = try recipe.init_from.isEmpty ? nil
            : resume && FileManager.default.fileExists(atPath: ownCheckpoint.path) ? InitialWeights(resumingFrom: ownCheckpoint, recipe: recipe)
            : InitialWeights(path: recipe.init_from, recipe: recipe)
        config = try start?.backbone.config ?? recipe.modelConfig()
        head = start?.head?.config ?? HeadConfig(inDim: config.embedDim, outDim: recipe.out_dim, hiddenDim: recipe.head_hidden_dim,
                                                 bottleneckDim: recipe.bottleneck_dim, layerCount: recipe.head_nlayers,
                                                 normLastLayer: recipe.norm_last_layer)
        try head.validate()
        initialWeights = start
        // The student keeps every block of every crop for the backward pass; the teacher one block of the global crops.
        let patch = config.patchSize, firstPatch = config.firstPatchToken
        func tokens(_ size: Int) -> Int { (size / patch) * (size / patch) + firstPatch }
        let b = recipe.batch_size / communicator.size
        let activations = config.activationBytes(batch: 2 * b, tokens: tokens(recipe.global_crop_size), keptBlocks: config.depth + 1)
            + config.activationBytes(batch: recipe.local_crops_number * b, tokens: tokens(recipe.local_crop_size), keptBlocks: config.depth)
            + 4 * Double(b) * Double(2 + recipe.local_crops_number) * Double(head.outDim + head.hiddenDim) * 3
        try config.checkMemory(bytes: activations, advice: "lower batch_size, the crop sizes or local_crops_number")

        var data = try dataset ?? openDataset(kind: recipe.dataset, path: recipe.data_path.isEmpty ? nil : recipe.data_path)
        if recipe.train_subset > 0 && recipe.train_subset < data.count {
            data = DatasetSubset(data, indices: Array(0..<recipe.train_subset))
        }
        trainingData = data
        fullData = (data as? DatasetSubset)?.base ?? data
        (mean, std) = recipe.mean.isEmpty && start != nil ? (start!.backbone.mean, start!.backbone.std)
            : Trainer.normalization(recipe: recipe, dataset: fullData)
        loader = try MultiCropLoader(dataset: data, augmenter: MultiCropAugmenter(settings: recipe.augmentationSettings(mean: mean, std: std)),
                                     batchSize: recipe.batch_size, seed: UInt64(recipe.seed),
                                     onBadImage: BadImagePolicy(rawValue: recipe.on_bad_image)!,  // validated by the recipe
                                     workers: recipe.num_workers, rank: communicator.rank, ranks: communicator.size)
        iterationsPerEpoch = loader.iterationsPerEpoch

        (learningRates, weightDecays, momenta, koleoWeights) =
            Trainer.schedules(recipe: recipe, iterationsPerEpoch: iterationsPerEpoch, iterations: recipe.epochs * iterationsPerEpoch)
        teacherTemperatures = Schedules.teacherTemperature(warmup: recipe.warmup_teacher_temp, final: recipe.teacher_temp,
                                                           warmupEpochs: recipe.warmup_teacher_temp_epochs, epochs: recipe.epochs)

        model = SelfDistillation(config: config, head: head, batchSize: loader.localBatchSize, globalSize: recipe.global_crop_size,
                                 localSize: recipe.local_crop_size, localCount: recipe.local_crops_number,
                                 studentTemperature: Float(recipe.student_temp), centerMomentum: Float(recipe.center_momentum),
                                 teacherTargets: recipe.teacherTargets, patchMasking: recipe.patchMasking)
        model.initialize(seed: UInt64(recipe.seed))
        model.communicator = communicator
        if let start { start.load(into: model) }

        try createFolder(output, what: "run folder")
        guard FileManager.default.isWritableFile(atPath: output.path) else {
            throw DinoError("the run folder \(output.path) is not writable: choose another --output")
        }
        if communicator.isPrimary {
            try RunFolderLock.acquire(output)
            removeStaleTemporaryFiles(in: output)
        }
        if resume && FileManager.default.fileExists(atPath: checkpointURL.path) {
            try TrainingCheckpoint.restore(from: checkpointURL, into: self)
            if let scheduledSteps { fitSchedules(to: scheduledSteps) }
        } else if !resume && FileManager.default.fileExists(atPath: checkpointURL.path) {
            throw DinoError("\(output.path) already holds a run (checkpoint.safetensors): use --resume to continue it, or another --output")
        }
    }

    /// The per-step schedules over `iterations` steps (utils.cosine_scheduler; lr scaled by batch/256):
    /// lr, weight decay, teacher momentum, KoLeo weight.
    public static func schedules(recipe: Recipe, iterationsPerEpoch: Int, iterations: Int)
        -> (learningRates: [Double], weightDecays: [Double], momenta: [Double], koleoWeights: [Double]) {
        let warmup = recipe.warmupIterations(iterationsPerEpoch: iterationsPerEpoch, iterations: iterations)
        return (Schedules.cosine(base: recipe.lr * Double(recipe.batch_size) / 256, final: recipe.min_lr,
                                 iterations: iterations, warmupIterations: warmup),
                Schedules.cosine(base: recipe.weight_decay, final: recipe.weight_decay_end, iterations: iterations,
                                 warmupIterations: 0),
                Schedules.cosine(base: recipe.momentum_teacher, final: 1, iterations: iterations, warmupIterations: 0),
                Schedules.cosine(base: recipe.koleo_loss_weight, final: recipe.koleoLossWeightEnd, iterations: iterations,
                                 warmupIterations: 0))
    }

    /// Rebuilds the schedules over `steps` in all and records them as the run's horizon (`max_minutes`).
    func fitSchedules(to steps: Int) {
        scheduledSteps = steps
        (learningRates, weightDecays, momenta, koleoWeights) =
            Trainer.schedules(recipe: recipe, iterationsPerEpoch: iterationsPerEpoch, iterations: steps)
    }

    /// The steps a time-boxed run fits its schedules to: the current step plus what the remaining
    /// budget holds at the measured seconds per step, less 2% for the VM's drift, at most `upperBound`
    /// and at least one more step.
    public static func fittedSteps(step: Int, secondsPerStep: Double, elapsed: Double, budget: Double, upperBound: Int) -> Int {
        let remaining = max(0, budget - elapsed) * 0.98
        let more = secondsPerStep > 0 ? Int((remaining / secondsPerStep).rounded(.down)) : upperBound
        return min(upperBound, step + max(1, more))
    }

    /// At a time-box check: the steps to fit the schedules to again, or nil to keep `scheduled`. Shorter
    /// when the steps left would overrun the budget at `secondsPerStep`; longer (at most `upperBound`)
    /// when they would leave more than 4% of it unused, twice the fit's 2% drift allowance, so that a
    /// pace that wanders inside that band does not refit back and forth.
    public static func refittedSteps(step: Int, scheduled: Int, secondsPerStep: Double, elapsed: Double, budget: Double,
                                     upperBound: Int) -> Int? {
        let finish = elapsed + Double(scheduled - step) * secondsPerStep
        if finish > budget {
            return fittedSteps(step: step, secondsPerStep: secondsPerStep, elapsed: elapsed, budget: budget, upperBound: scheduled)
        }
        if finish < 0.96 * budget && scheduled < upperBound {
            let fitted = fittedSteps(step: step, secondsPerStep: secondsPerStep, elapsed: elapsed, budget: budget,
                                     upperBound: upperBound)
            return fitted > scheduled ? fitted : nil
        }
        return nil
    }

    static func normalization(recipe: Recipe, dataset: any ImageDataset) -> ([Float], [Float]) {
        if !recipe.mean.isEmpty { return (recipe.mean.map { Float($0) }, recipe.std.map { Float($0) }) }
        if dataset is FashionMNIST { return (FashionMNIST.mean, FashionMNIST.std) }
        return recipe.in_chans == 3 ? (imageNetMean, imageNetStd) : ([0.449], [0.226])
    }

    /// The recipe's `eval_resize`, as the checkpoints carry it (nil: the official transform). A model
    /// continued from published weights keeps their size, and a resize below it would not crop.
    var evaluationResize: Int? { recipe.eval_resize >= config.imageSize ? recipe.eval_resize : nil }

    /// The teacher's backbone as a standalone checkpoint (what `dino features`, `knn` and `attention` read).
    public func teacherBackbone() -> BackboneCheckpoint {
        var backbone = BackboneCheckpoint(config: config, mean: mean, std: std)
        backbone.parameters.pointer.update(from: teacher.pointer, count: backbone.layout.count)  // backbone tensors come first
        backbone.evaluationResize = evaluationResize
        return backbone
    }

    /// Saves the training checkpoint and the teacher backbone (both atomically).
    public func saveCheckpoint() throws {
        guard communicator.isPrimary else { return }  // one writer: rank 0
        try TrainingCheckpoint.save(to: checkpointURL, trainer: self)
        try teacherBackbone().save(to: teacherBackboneURL)
    }

    /// Runs until the last step (or `max_steps`, or a stop request), reporting through `progress`.
    public func run(progress: (TrainingEvent) -> Void = { _ in }) throws -> TrainingSummary {
        try GEMM.withPrecision(recipe.matmulPrecision) {
            if GEMM.precision != recipe.matmulPrecision {
                progress(.message("matmul_precision bfloat16: this CPU has no AVX-512 BF16, so the matmuls run in float32"))
            }
            return try runSteps(progress: progress)
        }
    }

    /// `run`'s body, at the recipe's matmul precision.
    private func runSteps(progress: (TrainingEvent) -> Void) throws -> TrainingSummary {
        let b = recipe.batch_size, g = recipe.global_crop_size, l = recipe.local_crop_size, localCount = recipe.local_crops_number
        if communicator.isPrimary { try writeAtomically(Data(recipe.yaml.utf8), to: output.appendingPathComponent("recipe.yaml")) }

        let logURL = output.appendingPathComponent("log.jsonl")
        // A run killed after its last checkpoint logged steps that the resumed run repeats (and perhaps
        // half a line): keep only the complete lines up to the checkpoint's step.
        try keepLogLines(logURL, upToStep: step)
        try keepLogLines(output.appendingPathComponent("knn.jsonl"), upToStep: step)
        if communicator.isPrimary && !FileManager.default.fileExists(atPath: logURL.path) {
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        }
        guard let log = try? (communicator.isPrimary ? FileHandle(forWritingTo: logURL) : FileHandle(forWritingTo: URL(fileURLWithPath: "/dev/null"))) else {
            throw DinoError("cannot write \(logURL.path): check that \(output.path) is writable")
        }
        defer { try? log.close() }
        _ = try? log.seekToEnd()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]

        var total = totalSteps
        let budget = recipe.max_minutes * 60
        if budget > 0 && trainedSeconds >= budget && step < total {
            progress(.message(String(format: "the time box (max_minutes %g) was spent at step %d: nothing to train (raise max_minutes to continue)", recipe.max_minutes, step)))
            return TrainingSummary(steps: step, finalLoss: .nan, interrupted: false, collapseWarned: false, skippedImages: 0,
                                   knn: [], checkpoint: checkpointURL, teacherBackbone: teacherBackboneURL, timeBoxReached: true)
        }
        if step >= total {
            progress(.message(scheduledSteps == total
                ? "the run is already at step \(step), the end of the schedules max_minutes fitted: nothing to train"
                : "the run is already at step \(step), and the recipe asks for \(total): nothing to train (raise epochs or max_steps to continue)"))
        } else if step == 0 {
            progress(.message("training \(config.arch) (\(config.embedDim) wide, depth \(config.depth), \(config.numHeads) heads, patch \(config.patchSize)) with a \(head.outDim)-prototype head on \(trainingData.count) images: \(recipe.epochs) epoch\(recipe.epochs == 1 ? "" : "s") of \(iterationsPerEpoch) step\(iterationsPerEpoch == 1 ? "" : "s"), batch \(b)\(communicator.size > 1 ? " (\(communicator.size) processes of \(b / communicator.size))" : ""), 2x\(g)px + \(localCount)x\(l)px crops, \(Parallel.threadCount) thread\(Parallel.threadCount == 1 ? "" : "s"), \(GEMM.precision == .bfloat16 ? "bfloat16 matmuls (\(GEMM.bfloat16KernelName ?? "AVX-512 BF16"))" : "OpenBLAS \(Parallel.blasCoreName) kernels")"))
        } else {
            progress(.message("resuming at step \(step) of \(total) (epoch \(step / iterationsPerEpoch))"))
        }
        var monitor = CollapseMonitor(outDim: head.outDim)
        var summary = TrainingSummary(steps: step, finalLoss: .nan, interrupted: false, collapseWarned: false,
                                      skippedImages: 0, knn: [], checkpoint: checkpointURL, teacherBackbone: teacherBackboneURL)
        var lastCheckpointStep = step
        defer { loader.drain() }
        if recipe.knn_every > 0 && step == 0 {
            try evaluateKNN(epoch: 0, progress: progress, summary: &summary)
        }
        let started = sharedClock(), secondsBefore = trainedSeconds
        let firstStep = step
        // The time box never fits past the recipe's epochs.
        let ceiling = recipe.epochs * iterationsPerEpoch
        // A checkpoint from before the pace was saved measures it from where it resumes.
        if scheduledSteps != nil && paceStart == nil { paceStart = (step, trainedSeconds) }
        /// The time box's schedules now end at `fitted`, and the pace is measured from here.
        func applyFit(_ fitted: Int) {
            fitSchedules(to: fitted)
            total = totalSteps
            paceStart = (step, trainedSeconds)
        }
        // Refits that move the schedules' end by under 5% of the last announced end are applied quietly:
        // on a tiny folder (one-step epochs) the pace is checked every few seconds, and it jitters.
        var announcedEnd = scheduledSteps
        // An unreadable image is skipped whenever a batch draws it (each epoch); it is reported and counted once.
        var skippedNames: Set<String> = []
        while step < total {
            let batch = try loader.next(step: step, limit: total)
            let newlySkipped = Array(Set(batch.skipped).subtracting(skippedNames)).sorted()
            if !newlySkipped.isEmpty {
                skippedNames.formUnion(newlySkipped)
                summary.skippedImages += newlySkipped.count  // this process's; the processes' sum below
                progress(.warning("skipped \(newlySkipped.count) unreadable image(s): \(newlySkipped.prefix(3).joined(separator: ", "))\(newlySkipped.count > 3 ? ", ..." : ""); each is left out whenever it is drawn"))
            }
            let epoch = step / iterationsPerEpoch
            let lr = learningRates[step], wd = weightDecays[step], momentum = momenta[step], koleoWeight = koleoWeights[step]
            let teacherTemperature = teacherTemperatures[min(epoch, teacherTemperatures.count - 1)]
            let lastLayerFrozen = epoch < recipe.freeze_last_layer

            var dropGenerator = RandomGenerator(seed: UInt64(recipe.seed), stream: 0xD409, index: UInt64(step))
            var settings = StepSettings(learningRate: lr, weightDecay: wd, teacherMomentum: momentum,
                                        teacherTemperature: teacherTemperature, freezeLastLayer: lastLayerFrozen,
                                        clip: recipe.clip_grad, dropPathRate: recipe.drop_path_rate,
                                        koleoWeight: koleoWeight, maskedPatchWeight: recipe.ibot_loss_weight)
            // Head warm-up: the backbone frozen, then its lr ramping up linearly over as many steps.
            let frozen = frozenBackboneSteps
            settings.freezeBackbone = step < frozen
            if frozen > 0 && step >= frozen && step < 2 * frozen { settings.backboneLearningRateScale = Double(step - frozen + 1) / Double(frozen) }
            let stats: LossStatistics
            do {
                stats = try model.step(globals: batch.globals.pointer, locals: localCount > 0 ? batch.locals.pointer : nil,
                                       settings: settings, dropPath: &dropGenerator)
            } catch let error as NonFiniteLoss {
                let kept = FileManager.default.fileExists(atPath: checkpointURL.path)
                    ? "the last good checkpoint (step \(lastCheckpointStep)) is kept at \(checkpointURL.path)"
                    : "no checkpoint had been written yet"
                throw DinoError("the \(error.term) became \(error.value) at step \(step) (epoch \(epoch)); training stopped and \(kept). Usual remedies: a lower lr or a longer warm-up (warmup_steps), clip_grad > 0, a lower teacher_temp")
            }
            withExtendedLifetime(batch) {}  // the step saw only the batch's pointers
            step += 1

            // Rank 0's clock, a stop request on any process, and the images every process skipped.
            let shared = synchronizeStep(stopRequested: stopFlag.isRequested, skipped: newlySkipped.count)
            let stopping = shared.stop
            if communicator.size > 1 { summary.skippedImages += shared.skipped - newlySkipped.count }
            try checkProcessesAgree(step: step)

            // Log.
            let elapsed = shared.clock - started
            trainedSeconds = secondsBefore + elapsed
            let imagesPerSecond = Double((step - firstStep) * b) / max(elapsed, 1e-9)
            let record = StepRecord(step: step, epoch: epoch, loss: stats.loss, teacher_entropy: stats.teacherEntropy,
                                    kl: stats.kullbackLeibler, koleo: stats.koleo, koleo_weight: koleoWeight,
                                    ibot: stats.maskedPatch, lr: lr, wd: wd, momentum: momentum,
                                    teacher_temp: teacherTemperature, images_per_s: imagesPerSecond, seconds: elapsed,
                                    eta_s: Double((total - step) * b) / max(imagesPerSecond, 1e-9))
            do { try log.write(contentsOf: try encoder.encode(record) + Data("\n".utf8)) } catch {
                throw DinoError("cannot append to \(logURL.path) (\(error.localizedDescription)): free disk space, then continue with --resume")
            }
            progress(.step(record, totalSteps: total))
            summary.finalLoss = stats.loss
            summary.steps = step
            // A flat teacher is normal while the lr warms up; after it, and half an epoch, it is collapse.
            let warmup = recipe.warmupIterations(iterationsPerEpoch: iterationsPerEpoch, iterations: total)
            if let warning = monitor.observe(stats, step: step, minimumSteps: max(50, iterationsPerEpoch / 2, warmup)) {
                summary.collapseWarned = true
                progress(.warning(warning))
                if recipe.on_collapse != "warn" {
                    throw TrainingCollapse(step: step, checkpointStep: lastCheckpointStep, warning: warning, output: output)
                }
            }

            // Evaluation, the time box, checkpoints. The checkpoint comes last so that it carries this
            // step's time box state (a fit or a pace check), and a resume continues exactly.
            let endOfEpoch = step % iterationsPerEpoch == 0, finishedEpoch = step / iterationsPerEpoch
            if endOfEpoch {
                if recipe.knn_every > 0 && finishedEpoch % recipe.knn_every == 0 {
                    try evaluateKNN(epoch: finishedEpoch, progress: progress, summary: &summary)
                }
                if recipe.attention_every > 0 && finishedEpoch % recipe.attention_every == 0 {
                    try writeAttention(epoch: finishedEpoch, progress: progress)
                }
            }

            // The time box: fit the schedules once (the evaluations of the first epoch included in the
            // measured time); at the end of each later epoch, fit them again to the pace since the last
            // fit or check if at that pace they would overrun the budget (shorter), or leave more than 4%
            // of it unused because the machine sped up again (longer: a slow stretch must not waste the
            // minutes after it); stop at the limit whatever the
            // schedules say. The pace is taken over at least one whole epoch and 5% of the budget (a
            // 15-step epoch is too short to tell a slower machine from noise), so it holds one epoch's
            // evaluations: a fit taken mid-epoch (at 10% of the budget) followed by an epoch end a few
            // steps later would otherwise charge a whole k-NN check to those few steps.
            if budget > 0 {
                trainedSeconds = secondsBefore + (sharedClock() - started)
                if scheduledSteps == nil && (endOfEpoch || trainedSeconds >= 0.1 * budget) {
                    let perStep = (trainedSeconds - secondsBefore) / Double(step - firstStep)
                    let fitted = Trainer.fittedSteps(step: step, secondsPerStep: perStep, elapsed: trainedSeconds, budget: budget,
                                                     upperBound: ceiling)
                    applyFit(fitted)
                    announcedEnd = fitted
                    progress(.message(String(format: "time box: %.3f s per step, so %d steps (%.2f epochs) fit in max_minutes %g; the lr, weight-decay and momentum schedules now end at step %d", perStep, fitted, Double(fitted) / Double(iterationsPerEpoch), recipe.max_minutes, fitted)))
                } else if let scheduled = scheduledSteps, let from = paceStart, endOfEpoch, step - from.step >= iterationsPerEpoch,
                          trainedSeconds - from.seconds >= 0.05 * budget,
                          step < scheduled, trainedSeconds < budget {
                    // Against the fitted horizon, not `max_steps`: a run split by max_steps refits as the whole run would.
                    let pace = (trainedSeconds - from.seconds) / Double(step - from.step)
                    paceStart = (step, trainedSeconds)
                    if let fitted = Trainer.refittedSteps(step: step, scheduled: scheduled, secondsPerStep: pace, elapsed: trainedSeconds,
                                                          budget: budget, upperBound: ceiling) {
                        applyFit(fitted)
                        let announced = announcedEnd ?? scheduled
                        if 20 * abs(fitted - announced) >= announced {
                            announcedEnd = fitted
                            progress(.message(String(format: "time box: the steps %@ to %.3f s each, so the schedules were fitted again and now end at step %d (%.2f epochs) instead of %d", fitted < announced ? "slowed" : "sped up", pace, fitted, Double(fitted) / Double(iterationsPerEpoch), announced)))
                        }
                    }
                }
            }
            let timeSpent = budget > 0 && trainedSeconds >= budget && step < total

            if (recipe.checkpoint_every > 0 && step % recipe.checkpoint_every == 0) || endOfEpoch || step == total
                || stopping || timeSpent {
                try saveCheckpoint()
                lastCheckpointStep = step
                try keepHealthyCheckpoint(monitor)
                if communicator.isPrimary && endOfEpoch && recipe.saveckp_freq > 0 && finishedEpoch % recipe.saveckp_freq == 0 {
                    let numbered = output.appendingPathComponent(String(format: "checkpoint%04d.safetensors", finishedEpoch))
                    try writeAtomically(readInputFile(checkpointURL, what: "checkpoint"), to: numbered)
                }
            }
            if timeSpent {
                summary.timeBoxReached = true
                progress(.message(String(format: "time box reached: max_minutes %g spent at step %d of the %d the schedules were fitted to (the steps ran slower than the last fit measured); checkpoint saved to %@", recipe.max_minutes, step, total, checkpointURL.path)))
                return summary
            }
            if stopping {
                summary.interrupted = true
                progress(.message("stopped at step \(step); checkpoint saved to \(checkpointURL.path): continue with --resume"))
                return summary
            }
        }
        if summary.steps > 0 && lastCheckpointStep != step { try saveCheckpoint() }
        if let announced = announcedEnd, step == scheduledSteps, announced != step {
            progress(.message("time box: the schedules ended at step \(step), not the \(announced) last printed (later refits, each under 5%, were applied without a line)"))
        }
        return summary
    }

    /// Teacher k-NN on a validation split of the training data (`knnSplits`).
    func evaluateKNN(epoch: Int, progress: (TrainingEvent) -> Void, summary: inout TrainingSummary) throws {
        guard communicator.isPrimary else { return }
        let (memory, evaluation) = try knnSplits()
        guard let memory, let evaluation else { return }
        let extractor = try FeatureExtractor(checkpoint: teacherBackbone(), batchSize: 256)
        let train = try extractor.extract(memory, onBadImage: .skip)
        let test = try extractor.extract(evaluation, onBadImage: .skip)
        let result = try KNN.evaluate(trainFeatures: train.features, trainLabels: train.labels, testFeatures: test.features,
                                      testLabels: test.labels, dimension: train.dimension, ks: [recipe.knn_k])[0]
        summary.knn.append((epoch, result.top1))
        progress(.knn(epoch: epoch, step: step, top1: result.top1))
        let line = "{\"epoch\":\(epoch),\"step\":\(step),\"knn_k\":\(recipe.knn_k),\"knn_top1\":\(String(format: "%.2f", result.top1)),\"knn_top5\":\(String(format: "%.2f", result.top5))}\n"
        let url = output.appendingPathComponent("knn.jsonl")
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        do {
            let handle = try FileHandle(forWritingTo: url)
            defer { try? handle.close() }
            _ = try handle.seekToEnd()
            try handle.write(contentsOf: Data(line.utf8))
        } catch {
            throw DinoError("cannot append to \(url.path) (\(error.localizedDescription)): free disk space, then continue with --resume")
        }
    }

    /// Rewrites a JSON-lines log to its complete lines whose `"step"` is at most `step` (atomically; a
    /// missing log is left missing).
    func keepLogLines(_ url: URL, upToStep step: Int) throws {
        guard communicator.isPrimary else { return }
        guard let data = FileManager.default.contents(atPath: url.path), !data.isEmpty else { return }
        let text = String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if !text.hasSuffix("\n") { lines.removeLast() }   // a line cut off by a kill
        let kept = lines.filter { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let lineStep = object["step"] as? Int else { return false }
            return lineStep <= step
        }
        let rewritten = kept.map { $0 + "\n" }.joined()
        if rewritten.utf8.count != data.count { try writeAtomically(Data(rewritten.utf8), to: url) }
    }

    /// The held-out check's memory bank and queries, both cut from the training data by
    /// `ValidationSplit` (the first `knn_train_size` and `knn_eval_size` of each part), so that
    /// choosing settings by it never looks at the test split the final `dino knn` reports on.
    /// Nil without labels.
    func knnSplits() throws -> ((any ImageDataset)?, (any ImageDataset)?) {
        let base = fullData
        guard !base.classNames.isEmpty else { return (nil, nil) }
        let split = ValidationSplit.indices(count: base.count)
        return (DatasetSubset(base, indices: Array(split.memory.prefix(recipe.knn_train_size))),
                DatasetSubset(base, indices: Array(split.queries.prefix(recipe.knn_eval_size))))
    }

    /// Writes the teacher's last-layer attention for a few fixed training images into `attention/epochNNNN`.
    func writeAttention(epoch: Int, progress: (TrainingEvent) -> Void) throws {
        guard communicator.isPrimary else { return }
        let images = try (0..<min(recipe.attention_images, fullData.count)).map {
            (fullData.name(at: $0), try fullData.image(at: $0, channels: config.inChannels, minimumShortSide: nil))
        }
        let folder = output.appendingPathComponent(String(format: "attention/epoch%04d", epoch))
        let maps = try AttentionExporter(checkpoint: teacherBackbone()).export(images, to: folder)
        progress(.message(String(format: "epoch %d: attention maps in %@ (mean foreground share %.1f%%)", epoch, folder.path,
                                 100 * maps.map(\.foregroundShare).reduce(0, +) / Double(max(maps.count, 1)))))
    }
}
