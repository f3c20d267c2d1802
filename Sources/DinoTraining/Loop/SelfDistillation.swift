import DinoKernels
import DinoModel
import Foundation

/// The values the schedules give one step.
public struct StepSettings: Sendable {
    public var learningRate: Double
    public var weightDecay: Double
    public var teacherMomentum: Double
    public var teacherTemperature: Double
    public var freezeLastLayer: Bool
    /// Train the head alone: no backbone backward pass, and the optimizer leaves the backbone (and its
    /// teacher copy) as they are (`freeze_backbone_steps`).
    public var freezeBackbone = false
    /// The backbone's learning rate is `learningRate` times this (the ramp after `freeze_backbone_steps`).
    public var backboneLearningRateScale = 1.0
    public var clip: Double
    public var dropPathRate: Double
    /// Weight of the KoLeo term on the student's global-crop CLS features (0: off, as DINO).
    public var koleoWeight: Double
    /// Weight of the masked-patch (iBOT) term; needs a model made with `patchMasking`.
    public var maskedPatchWeight: Double
    public init(learningRate: Double, weightDecay: Double, teacherMomentum: Double, teacherTemperature: Double,
                freezeLastLayer: Bool, clip: Double, dropPathRate: Double, koleoWeight: Double = 0,
                maskedPatchWeight: Double = 0) {
        self.learningRate = learningRate; self.weightDecay = weightDecay; self.teacherMomentum = teacherMomentum
        self.teacherTemperature = teacherTemperature; self.freezeLastLayer = freezeLastLayer; self.clip = clip
        self.dropPathRate = dropPathRate; self.koleoWeight = koleoWeight; self.maskedPatchWeight = maskedPatchWeight
    }
}

/// Student, teacher, optimizer and loss state, and one DINO step on a batch of crops, in the official
/// order: teacher forward (global crops) → student forward (all crops) → loss → center update →
/// finite check → backward → per-tensor clip, last layer skipped while frozen → AdamW → teacher EMA.
/// Activations are allocated once per crop size, so a step allocates nothing of model size.
///
/// With `patchMasking` (DINOv2's iBOT term) some patches of the student's global crops are replaced by
/// `mask_token`; the shared head maps the student's output at those patches and the teacher's at the
/// same (unmasked) patches, and `MaskedPatchLoss` adds their cross-entropy, weighted by the step's
/// `maskedPatchWeight`. The student's CLS of the masked crops feeds the DINO loss as in DINOv2.
///
/// With drop path, each branch runs only on the images that keep it (`skipsDroppedImages`, the default;
/// see `VisionTransformer.skipsDroppedImages`).
///
/// `classTokenOnly` (the default) runs the last block of every backbone pass for the class token alone
/// wherever only CLS is read (`ViTActivations`): the same loss and gradients up to rounding, 7% (12 blocks)
/// to 20% (4 blocks) fewer backbone FLOPs (steps measured 1.03-1.16x faster). `false` computes every
/// token, as the official code does.
///
/// Each backbone pass, with the head on its rows, is split into `shards` parts of its batch (by
/// default 2; always 1 under the masked-patch term or for a batch of one), each with its own
/// activations; on 2 threads the halves run side by side (`Parallel.forEachShard`), and their weight
/// gradients are summed in a fixed order, so results depend on the shard count (by float rounding),
/// never on the thread count. The loss, the head's last-layer gradient (one product over all rows)
/// and the optimizer see the whole batch.
public final class SelfDistillation {
    public let config: ViTConfig
    public let head: HeadConfig
    public let layout: ParameterLayout
    public let batchSize: Int, globalSize: Int, localSize: Int, localCount: Int
    public let student: FloatBuffer, teacher: FloatBuffer, gradients: FloatBuffer
    public let optimizer: AdamW
    public let loss: DINOLoss
    /// The processes of a data-parallel run (`SingleProcess` alone), each with `batchSize` images of the
    /// global batch: the gradients (averaged before clipping), the center's batch mean, Sinkhorn-Knopp's
    /// sums and the reported statistics are over all of them, so every process takes the same step.
    public var communicator: any Communicator = SingleProcess() {
        didSet {
            loss.communicator = communicator.size > 1 ? communicator : nil
            patchLoss?.communicator = loss.communicator
        }
    }
    let transformer: VisionTransformer
    let dinoHead: DINOHead
    /// Batch shards of every backbone pass; shard s of a pass over n images takes images
    /// `n·s/shards ..< n·(s+1)/shards` (for the global crops: one view each).
    public let shards: Int
    let studentGlobal: [ViTActivations], studentLocal: [ViTActivations], teacherGlobal: [ViTActivations]
    /// Shards 1... accumulate their backbone and head-MLP gradients here, then into `gradients` in shard
    /// order: those parameters come first in the layout (the last layer and `mask_token` after them),
    /// so these hold its first `shardedCount` floats only.
    let shardGradients: [FloatBuffer]
    let shardedCount: Int
    /// The student's and the teacher's weight-normalized last layers, computed once per step.
    let studentLastLayer: HeadLastLayer, teacherLastLayer: HeadLastLayer
    let headGlobal: HeadActivations, headLocal: HeadActivations?, headTeacher: HeadActivations
    let logits: FloatBuffer, dLogits: FloatBuffer, dGlobal: FloatBuffer, dLocal: FloatBuffer
    let koleoWorkspace = KoLeo.Workspace()
    /// The masked-patch term's parts (nil when the model was made without `patchMasking`).
    public let patchMasking: PatchMasking?
    public let patchLoss: MaskedPatchLoss?
    var patchMask: [UInt8]   // (2B, np) of the current step
    let headPatch: HeadActivations?, headTeacherPatch: HeadActivations?
    let patchLogitGradients: FloatBuffer, dPatch: FloatBuffer

    public init(config: ViTConfig, head: HeadConfig, batchSize b: Int, globalSize: Int, localSize: Int, localCount: Int,
                studentTemperature: Float = 0.1, centerMomentum: Float = 0.9,
                teacherTargets: DINOLoss.TeacherTargets = .centering, patchMasking: PatchMasking? = nil,
                classTokenOnly: Bool = true, shards: Int? = nil, skipsDroppedImages: Bool = true) {
        self.config = config; self.head = head
        self.batchSize = b; self.globalSize = globalSize; self.localSize = localSize; self.localCount = localCount
        layout = .model(config, head: head, maskToken: patchMasking != nil)
        var transformer = VisionTransformer(config: config, layout: layout)
        transformer.skipsDroppedImages = skipsDroppedImages
        self.transformer = transformer
        dinoHead = DINOHead(config: head, layout: layout)
        student = FloatBuffer(count: layout.count); teacher = FloatBuffer(count: layout.count)
        gradients = FloatBuffer(count: layout.count)
        optimizer = AdamW(layout: layout)
        loss = DINOLoss(outDim: head.outDim, studentTemperature: studentTemperature, centerMomentum: centerMomentum,
                        teacherTargets: teacherTargets)
        // Only the CLS outputs feed the head, except the global crops' patch tokens under the masked-patch term.
        let globalClassTokenOnly = classTokenOnly && patchMasking == nil
        let shards = patchMasking == nil && b > 1 ? min(max(1, shards ?? 2), b) : 1
        self.shards = shards
        let layout = self.layout
        func sharded(_ images: Int, size: Int, training: Bool, classTokenOnly: Bool) -> [ViTActivations] {
            transformer.makeShardActivations(batch: images, shards: shards, imageHeight: size, imageWidth: size,
                                             training: training, classTokenOnly: classTokenOnly)
        }
        studentGlobal = sharded(2 * b, size: globalSize, training: true, classTokenOnly: globalClassTokenOnly)
        studentLocal = localCount > 0 ? sharded(localCount * b, size: localSize, training: true, classTokenOnly: classTokenOnly) : []
        teacherGlobal = sharded(2 * b, size: globalSize, training: false, classTokenOnly: globalClassTokenOnly)
        shardedCount = layout.offset("head.last_layer.weight_g")
        let shardedCount = self.shardedCount
        shardGradients = (1..<shards).map { _ in FloatBuffer(count: shardedCount) }
        let studentLastLayer = HeadLastLayer(config: head), teacherLastLayer = HeadLastLayer(config: head)
        self.studentLastLayer = studentLastLayer; self.teacherLastLayer = teacherLastLayer
        headGlobal = HeadActivations(config: head, rows: 2 * b, lastLayer: studentLastLayer)
        headLocal = localCount > 0 ? HeadActivations(config: head, rows: localCount * b, lastLayer: studentLastLayer) : nil
        headTeacher = HeadActivations(config: head, rows: 2 * b, lastLayer: teacherLastLayer, backward: false)
        let views = 2 + localCount
        logits = FloatBuffer(count: views * b * head.outDim); dLogits = FloatBuffer(count: views * b * head.outDim)
        dGlobal = FloatBuffer(count: 2 * b * config.embedDim); dLocal = FloatBuffer(count: max(1, localCount * b * config.embedDim))
        self.patchMasking = patchMasking
        let patches = studentGlobal[0].patchCount, maskable = patchMasking == nil ? 0 : 2 * b * patches
        patchLoss = patchMasking.map { _ in
            MaskedPatchLoss(outDim: head.outDim, studentTemperature: studentTemperature, centerMomentum: centerMomentum)
        }
        patchMask = [UInt8](repeating: 0, count: maskable)
        headPatch = patchMasking.map { _ in HeadActivations(config: head, rows: maskable, lastLayer: studentLastLayer) }
        headTeacherPatch = patchMasking.map { _ in HeadActivations(config: head, rows: maskable, lastLayer: teacherLastLayer, backward: false) }
        patchLogitGradients = FloatBuffer(count: maskable * head.outDim)
        dPatch = FloatBuffer(count: maskable * config.embedDim)
    }

    /// Official initialization of the student; the teacher starts as its byte copy.
    public func initialize(seed: UInt64) {
        var generator = RandomGenerator(seed: seed)
        Initialization.initialize(student.pointer, layout: layout, generator: &generator, layerScale: config.layerScaleInit)
        teacher.copy(from: student)
    }

    /// The teacher's raw head output `(2B, K)` from the latest step.
    public var teacherLogits: FloatBuffer { headTeacher.logits }

    /// One training step. `globals` is `(2B, C, G, G)`, `locals` `(L·B, C, l, l)`, both views-major.
    /// Throws, before changing any parameter, when the loss is not finite.
    public func step(globals: UnsafePointer<Float>, locals: UnsafePointer<Float>?, settings s: StepSettings,
                     dropPath generator: inout RandomGenerator) throws -> LossStatistics {
        let b = batchSize, k = head.outDim, views = 2 + localCount, d = config.embedDim, shards = self.shards
        let channels = config.inChannels, globalPixels = channels * globalSize * globalSize
        let localPixels = channels * localSize * localSize
        let locals = localCount > 0 ? locals : nil
        /// The images (or head rows) of shard `shard` of a pass over `n`.
        func part(_ n: Int, _ shard: Int) -> Range<Int> { (n * shard / shards)..<(n * (shard + 1) / shards) }
        dinoHead.prepareLastLayer(parameters: teacher.pointer, lastLayer: teacherLastLayer)
        dinoHead.prepareLastLayer(parameters: student.pointer, lastLayer: studentLastLayer)

        // Teacher on the two global crops (no drop path, no gradients) and its head, by shard.
        Parallel.forEachShard(shards) { shard in
            let rows = part(2 * b, shard)
            transformer.forward(parameters: teacher.pointer, images: globals + rows.lowerBound * globalPixels,
                                activations: teacherGlobal[shard])
            teacherGlobal[shard].copyClassTokens(to: headTeacher.inputPointer + rows.lowerBound * d)
            dinoHead.forward(parameters: teacher.pointer, activations: headTeacher, rows: rows)
        }

        // Student on every crop, one backbone pass per resolution and shard, each followed by the head
        // on its rows; some global-crop patches masked (one shard then).
        let rate = Float(s.dropPathRate)
        let np = studentGlobal[0].patchCount, n = studentGlobal[0].tokens, first = config.firstPatchToken
        var maskedRows: [Int] = [], maskedCrops: [Int] = []
        if let patchMasking {
            if communicator.size > 1 {
                // The masks of the whole global batch, as one process draws them; then this process's crops
                // (view v of its image j is global crop v·B + rank·b + j).
                let ranks = communicator.size, rank = communicator.rank
                var all = [UInt8](repeating: 0, count: 2 * b * ranks * np)
                all.withUnsafeMutableBufferPointer { mask in
                    patchMasking.sample(mask: mask.baseAddress!, images: 2 * b * ranks, patches: np, generator: &generator)
                }
                for view in 0..<2 {
                    for j in 0..<b {
                        let global = (view * b * ranks + rank * b + j) * np, local = (view * b + j) * np
                        for p in 0..<np { patchMask[local + p] = all[global + p] }
                    }
                }
            } else {
                patchMask.withUnsafeMutableBufferPointer { mask in
                    patchMasking.sample(mask: mask.baseAddress!, images: 2 * b, patches: np, generator: &generator)
                }
            }
            for i in 0..<(2 * b * np) where patchMask[i] != 0 {
                maskedRows.append((i / np) * n + first + i % np); maskedCrops.append(i / np)
            }
        }
        // One shard draws drop-path masks from the step's generator; more draw from generators of their
        // own, seeded from it in shard order.
        let seeds = shards > 1 && rate > 0 ? (0..<shards).map { _ in generator.next() } : []
        patchMask.withUnsafeBufferPointer { mask in
            let mask = patchMasking == nil ? nil : mask.baseAddress
            Parallel.forEachShard(shards) { shard in
                func pass(_ generator: inout RandomGenerator) {
                    let rows = part(2 * b, shard)
                    transformer.forward(parameters: student.pointer, images: globals + rows.lowerBound * globalPixels,
                                        activations: studentGlobal[shard], dropPathRate: rate, generator: &generator,
                                        patchMask: mask)
                    studentGlobal[shard].copyClassTokens(to: headGlobal.inputPointer + rows.lowerBound * d)
                    dinoHead.forward(parameters: student.pointer, activations: headGlobal, rows: rows)
                    (logits.pointer + rows.lowerBound * k).update(from: headGlobal.logits.pointer + rows.lowerBound * k,
                                                                  count: rows.count * k)
                    if let locals, let headLocal {
                        let localRows = part(localCount * b, shard)
                        transformer.forward(parameters: student.pointer, images: locals + localRows.lowerBound * localPixels,
                                            activations: studentLocal[shard], dropPathRate: rate, generator: &generator)
                        studentLocal[shard].copyClassTokens(to: headLocal.inputPointer + localRows.lowerBound * d)
                        dinoHead.forward(parameters: student.pointer, activations: headLocal, rows: localRows)
                        (logits.pointer + (2 * b + localRows.lowerBound) * k)
                            .update(from: headLocal.logits.pointer + localRows.lowerBound * k, count: localRows.count * k)
                    }
                }
                if shards == 1 {
                    pass(&generator)
                } else {
                    var own = RandomGenerator(seed: seeds.isEmpty ? 0 : seeds[shard])
                    pass(&own)
                }
            }
        }

        // The masked patches through the shared head: the student's output there, the teacher's at the same patches.
        let masked = maskedRows.count
        if let headPatch, let headTeacherPatch, masked > 0 {
            headPatch.rows = masked; headTeacherPatch.rows = masked
            for (r, row) in maskedRows.enumerated() {
                (headPatch.inputPointer + r * d).update(from: studentGlobal[0].normalized.pointer + row * d, count: d)
                (headTeacherPatch.inputPointer + r * d).update(from: teacherGlobal[0].normalized.pointer + row * d, count: d)
            }
            dinoHead.forward(parameters: teacher.pointer, activations: headTeacherPatch, rows: 0..<masked)
            dinoHead.forward(parameters: student.pointer, activations: headPatch, rows: 0..<masked)
        }

        // Loss, then the center update (so step t uses the center of step t−1).
        var stats = loss.forwardBackward(student: logits.pointer, teacher: headTeacher.logits.pointer, dStudent: dLogits.pointer,
                                         views: views, batch: b, teacherTemperature: Float(s.teacherTemperature))
        // Every process sees the averages (a non-finite value on any of them stops all of them together).
        (stats.loss, stats.teacherEntropy, stats.kullbackLeibler) = averagedOverProcesses(stats.loss, stats.teacherEntropy, stats.kullbackLeibler)
        guard stats.loss.isFinite else { throw NonFiniteLoss(value: stats.loss) }
        // KoLeo (DINOv2): weight·Σ over the two global crops of KoLeo(student CLS), added to dGlobal below.
        let koleoWeight = Float(s.koleoWeight)
        dGlobal.zero()
        if koleoWeight > 0 {
            stats.koleo = (0..<2).reduce(0) { total, view in
                total + koleoWeight * KoLeo.forwardBackward(dInput: dGlobal.pointer + view * b * d,
                                                            input: headGlobal.inputPointer + view * b * d,
                                                            rows: b, columns: d, weight: koleoWeight, workspace: koleoWorkspace)
            }
            stats.koleo = averagedOverProcesses(stats.koleo, 0, 0).0
            guard stats.koleo.isFinite else { throw NonFiniteLoss(value: stats.koleo, term: "KoLeo term") }
        }
        // (In a data-parallel run every process takes part, masked patches or not: the mean and the center are collective.)
        if let patchLoss, let headPatch, let headTeacherPatch, masked > 0 || communicator.size > 1 {
            if masked > 0 {
                let patch = patchLoss.forwardBackward(student: headPatch.logits.pointer, teacher: headTeacherPatch.logits.pointer,
                                                      dStudent: patchLogitGradients.pointer, rows: masked, rowCrops: maskedCrops,
                                                      crops: 2 * b, teacherTemperature: Float(s.teacherTemperature),
                                                      weight: Float(s.maskedPatchWeight))
                stats.maskedPatch = Float(s.maskedPatchWeight) * patch.loss
            }
            stats.maskedPatch = averagedOverProcesses(stats.maskedPatch, 0, 0).0
            guard stats.maskedPatch.isFinite else { throw NonFiniteLoss(value: stats.maskedPatch, term: "masked-patch term") }
            patchLoss.updateCenter(teacher: headTeacherPatch.logits.pointer, rows: masked)
        }
        loss.updateCenter(teacher: headTeacher.logits.pointer, rows: 2 * b)

        // Backward. The last layer's gradient is one product over every row (skipped while frozen); then
        // by shard the head below it and the backbone: shard 0 accumulates into `gradients`, the others
        // into their own buffers, added in shard order. Each shard zeroes its own part, on its own core,
        // unless the masked patches' head backward accumulates into it first.
        let shardsZero = masked == 0
        if shardsZero {
            (gradients.pointer + shardedCount).update(repeating: 0, count: gradients.count - shardedCount)
        } else {
            gradients.zero()
        }
        if !s.freezeLastLayer {
            var uses: [DINOHead.LastLayerUse] = [(UnsafePointer(dLogits.pointer), headGlobal)]
            if let headPatch, masked > 0 { uses.append((UnsafePointer(patchLogitGradients.pointer), headPatch)) }
            if let headLocal, locals != nil { uses.append((UnsafePointer(dLogits.pointer + 2 * b * k), headLocal)) }
            dinoHead.backwardLastLayer(gradients: gradients.pointer, parameters: student.pointer, lastLayer: studentLastLayer, uses: uses)
        }
        if let headPatch, masked > 0 {
            dPatch.zero()
            dinoHead.backward(gradients: gradients.pointer, dInput: dPatch.pointer, parameters: student.pointer,
                              dLogits: patchLogitGradients.pointer, activations: headPatch, rows: 0..<masked)
        }
        if locals != nil { dLocal.zero() }
        let backbone = !s.freezeBackbone
        Parallel.forEachShard(shards) { shard in
            let g = shard == 0 ? gradients.pointer : shardGradients[shard - 1].pointer
            if shard > 0 || shardsZero { g.update(repeating: 0, count: shardedCount) }
            let rows = part(2 * b, shard)
            dinoHead.backward(gradients: g, dInput: dGlobal.pointer, parameters: student.pointer, dLogits: dLogits.pointer,
                              activations: headGlobal, rows: rows)
            if backbone {
                transformer.backward(gradients: g, parameters: student.pointer, dClassTokens: dGlobal.pointer + rows.lowerBound * d,
                                     activations: studentGlobal[shard], tokenRows: maskedRows,
                                     dTokens: masked > 0 ? dPatch.pointer : nil)
            }
            if let headLocal, locals != nil {
                let localRows = part(localCount * b, shard)
                dinoHead.backward(gradients: g, dInput: dLocal.pointer, parameters: student.pointer,
                                  dLogits: dLogits.pointer + 2 * b * k, activations: headLocal, rows: localRows)
                if backbone {
                    transformer.backward(gradients: g, parameters: student.pointer,
                                         dClassTokens: dLocal.pointer + localRows.lowerBound * d, activations: studentLocal[shard])
                }
            }
        }
        for other in shardGradients {
            let total = gradients.pointer, part = other.pointer
            Parallel.forEachRange(shardedCount, grain: 1 << 14) { range in
                axpy(total + range.lowerBound, 1, part + range.lowerBound, range.count)
            }
        }

        // Data parallel: the mean of every process's gradient (each is the gradient of its own batch's mean loss).
        if communicator.size > 1 {
            communicator.sum(gradients.pointer, count: gradients.count)
            let scale = 1 / Float(communicator.size), all = gradients.pointer
            Parallel.forEachRange(gradients.count, grain: 1 << 14) { range in for i in range { all[i] *= scale } }
        }

        // Per-tensor clipping and AdamW (the last layer skipped entirely while frozen), then the EMA, in one pass.
        optimizer.step(parameters: student.pointer, gradients: gradients.pointer, learningRate: Float(s.learningRate),
                       weightDecay: Float(s.weightDecay), clip: Float(s.clip), freezeLastLayer: s.freezeLastLayer,
                       freezeBackbone: s.freezeBackbone, backboneScale: Float(s.backboneLearningRateScale), teacher: teacher.pointer, teacherMomentum: Float(s.teacherMomentum))
        return stats
    }
}

/// The loss (or the KoLeo term) was NaN or infinite; no parameter was changed by that step.
public struct NonFiniteLoss: Error {
    public let value: Float
    /// Which term was not finite: "loss" (the DINO loss) or "KoLeo term".
    public var term = "loss"
}

extension SelfDistillation {
    /// The means over the processes of three values (themselves in one process).
    func averagedOverProcesses(_ a: Float, _ b: Float, _ c: Float) -> (Float, Float, Float) {
        guard communicator.size > 1 else { return (a, b, c) }
        var values = [Double(a), Double(b), Double(c)]
        communicator.sum(&values, count: 3)
        let n = Double(communicator.size)
        return (Float(values[0] / n), Float(values[1] / n), Float(values[2] / n))
    }

    /// A checksum of the teacher's parameters (their sum in Double, in order) and the same over the student:
    /// processes that took the same steps agree on it bit for bit.
    public func parameterChecksum() -> (teacher: Double, student: Double) {
        var t = 0.0, s = 0.0
        for i in 0..<teacher.count { t += Double(teacher.pointer[i]) }
        for i in 0..<student.count { s += Double(student.pointer[i]) }
        return (t, s)
    }
}
