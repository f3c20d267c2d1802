import DinoData
import DinoKernels
import DinoModel
import DinoTraining
import Foundation
import TestSupport
import XCTest

/// A recipe small enough for tests: a 2-block, 32-wide ViT on 64 Fashion-MNIST images, 4 steps per epoch.
func tinyRecipe() -> Recipe {
    var r = Recipe()
    r.arch = "custom"; r.embed_dim = 32; r.depth = 2; r.num_heads = 2; r.patch_size = 7; r.in_chans = 1
    r.out_dim = 64; r.head_hidden_dim = 64; r.bottleneck_dim = 32
    r.global_crop_size = 28; r.local_crop_size = 14; r.local_crops_number = 2
    r.blur_sigma = [0.1, 0.5]
    r.batch_size = 16; r.train_subset = 64; r.epochs = 3; r.warmup_epochs = 1; r.freeze_last_layer = 1
    r.drop_path_rate = 0.1   // exercises the per-step drop-path generator on resume
    r.lr = 0.01; r.momentum_teacher = 0.99
    r.dataset = "fashion-mnist"
    return r
}

/// A run's `log.jsonl`, one record per step.
func records(in folder: URL) throws -> [StepRecord] {
    let text = try String(contentsOf: folder.appendingPathComponent("log.jsonl"), encoding: .utf8)
    return try text.split(separator: "\n").map { try JSONDecoder().decode(StepRecord.self, from: Data($0.utf8)) }
}

func losses(in folder: URL) throws -> [Float] { try records(in: folder).map(\.loss) }

final class ResumeTests: XCTestCase {
    /// A log line from before the masked-patch term and the KoLeo weight (no `ibot`, no `koleo_weight`)
    /// still reads, both as 0; a missing
    /// loss is still an error.
    func testLogLinesWithoutTheMaskedPatchTermRead() throws {
        let line = #"{"step":1,"epoch":0,"loss":5.93,"teacher_entropy":4.84,"kl":1.09,"koleo":0.09,"lr":0,"wd":0.04,"#
            + #""momentum":0.99,"teacher_temp":0.04,"images_per_s":471,"seconds":0.14,"eta_s":2292}"#
        let record = try JSONDecoder().decode(StepRecord.self, from: Data(line.utf8))
        XCTAssertEqual(record.ibot, 0)
        XCTAssertEqual(record.koleo_weight, 0)
        XCTAssertEqual(record.loss, 5.93)
        XCTAssertEqual(record.eta_s, 2292)
        let withoutLoss = line.replacingOccurrences(of: #""loss":5.93,"#, with: "")
        XCTAssertThrowsError(try JSONDecoder().decode(StepRecord.self, from: Data(withoutLoss.utf8)))
        let roundTrip = try JSONDecoder().decode(StepRecord.self, from: JSONEncoder().encode(record))
        XCTAssertEqual(roundTrip.teacher_temp, record.teacher_temp)
    }

    /// Train 2k steps; train k, stop, resume, train k: the same losses, bit for bit.
    func testResumeGivesIdenticalLosses() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.max_steps = 10
        let straight = root.appendingPathComponent("straight"), split = root.appendingPathComponent("split")
        _ = try Trainer(recipe: recipe, output: straight).run()
        var first = recipe
        first.max_steps = 5   // stops mid-epoch (4 steps per epoch)
        _ = try Trainer(recipe: first, output: split).run()
        let resumed = try Trainer(recipe: recipe, output: split, resume: true)
        XCTAssertEqual(resumed.step, 5)
        _ = try resumed.run()
        let a = try losses(in: straight), b = try losses(in: split)
        XCTAssertEqual(a.count, 10)
        XCTAssertEqual(a, b, "resumed run diverged")
        // The teacher backbone export loads as a backbone checkpoint.
        let backbone = try BackboneCheckpoint.load(from: straight.appendingPathComponent("teacher_backbone.safetensors"))
        XCTAssertEqual(backbone.config.embedDim, 32)
        // So does the training checkpoint itself (its teacher), for dino features.
        let fromTraining = try BackboneCheckpoint.load(from: straight.appendingPathComponent("checkpoint.safetensors"))
        XCTAssertEqual(fromTraining.parameters.array, backbone.parameters.array)
    }

    func testResumingWithAnotherArchitectureIsAClearError() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.max_steps = 1
        _ = try Trainer(recipe: recipe, output: root).run()
        var other = recipe
        other.embed_dim = 48
        XCTAssertThrowsError(try Trainer(recipe: other, output: root, resume: true)) {
            XCTAssertTrue("\($0)".contains("different architecture"), "\($0)")
        }
        XCTAssertThrowsError(try Trainer(recipe: recipe, output: root)) {
            XCTAssertTrue("\($0)".contains("use --resume"), "\($0)")
        }
    }

    /// A diverging run stops with a clear message and leaves the last good checkpoint in place.
    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.lr = 1e36; recipe.warmup_epochs = 0; recipe.clip_grad = 0; recipe.checkpoint_every = 1
        recipe.freeze_last_layer = 0; recipe.max_steps = 12
        let trainer = try Trainer(recipe: recipe, output: root)
        XCTAssertThrowsError(try trainer.run()) { error in
            XCTAssertTrue("\(error)".contains("the loss became"), "\(error)")
            XCTAssertTrue("\(error)".contains("last good checkpoint"), "\(error)")
        }
        let file = try SafeTensors.read(root.appendingPathComponent("checkpoint.safetensors"))
        let saved = Int(file.metadata["dino.step"]!)!
        XCTAssertLessThan(saved, trainer.step + 1)
        XCTAssertTrue(file.tensors.allSatisfy { $0.values.allSatisfy(\.isFinite) }, "the kept checkpoint holds non-finite values")
    }
}

/// A trainer whose clock reads `seconds(step)`, so a time-boxed run fits deterministically.
func clockedTrainer(_ recipe: Recipe, _ folder: URL, resume: Bool = false, seconds: @escaping (Int) -> Double) throws -> Trainer {
    let t = try Trainer(recipe: recipe, output: folder, resume: resume)
    t.clock = { [unowned t] in seconds(t.step) }
    return t
}

/// The tiny recipe's lr cosine (batch 16, 1 warm-up epoch of 4 steps) over `iterations` steps.
/// The lr schedule of `tinyRecipe` over `iterations` steps: one 4-step epoch of warm-up, raised to a
/// quarter of the run when that is longer (`Recipe.warmupFloorSteps` is far above these runs).
func learningRates(_ recipe: Recipe, iterations: Int) -> [Double] {
    Schedules.cosine(base: recipe.lr * 16 / 256, final: recipe.min_lr, iterations: iterations, warmupIterations: max(4, iterations / 4))
}

/// `max_minutes` on test clocks (so the fitted horizon is deterministic).
final class TimeBoxTests: XCTestCase {
    func testFittedStepsFollowTheBudget() {
        // 60 s left at 0.5 s per step, less 2%: 117 more steps.
        XCTAssertEqual(Trainer.fittedSteps(step: 10, secondsPerStep: 0.5, elapsed: 40, budget: 100, upperBound: 1000), 127)
        XCTAssertEqual(Trainer.fittedSteps(step: 10, secondsPerStep: 0.5, elapsed: 40, budget: 100, upperBound: 50), 50)
        XCTAssertEqual(Trainer.fittedSteps(step: 10, secondsPerStep: 5, elapsed: 99, budget: 100, upperBound: 50), 11)
        // At step 10 of 70, 40 s spent of 100: the 60 steps left at 1.1 s overrun (106 s), so 63
        // (10 + ⌊58.8/1.1⌋); at 1 s they finish at 100 s and at 0.95 s at 97 s, inside the band, so no
        // refit; at 0.9 s they would leave 6 s (over 4%) unused, so 75 (10 + ⌊58.8/0.9⌋), or the upper bound.
        func refit(_ pace: Double, upperBound: Int = 1000) -> Int? {
            Trainer.refittedSteps(step: 10, scheduled: 70, secondsPerStep: pace, elapsed: 40, budget: 100, upperBound: upperBound)
        }
        XCTAssertEqual(refit(1.1), 63)
        XCTAssertNil(refit(1.0))
        XCTAssertNil(refit(0.95))
        XCTAssertEqual(refit(0.9), 75)
        XCTAssertEqual(refit(0.9, upperBound: 72), 72)
        XCTAssertNil(refit(0.9, upperBound: 70))
    }

    /// 9 s of budget at 1 s per step: measured after step 1 (10% of the budget), 8 steps fit
    /// (1 + ⌊8·0.98⌋); the schedules end at step 8, and a run stopped at 5 and resumed gives the same losses.
    func testTimeBoxFitsTheSchedulesAndResumesExactly() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()       // 3 epochs of 4 steps
        recipe.max_minutes = 0.15
        let straight = root.appendingPathComponent("straight"), split = root.appendingPathComponent("split")
        func trainer(_ recipe: Recipe, _ folder: URL, resume: Bool = false) throws -> Trainer {
            try clockedTrainer(recipe, folder, resume: resume) { Double($0) }
        }
        var messages: [String] = []
        let summary = try trainer(recipe, straight).run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertEqual(summary.steps, 8)
        XCTAssertFalse(summary.timeBoxReached)
        XCTAssertTrue(messages.contains { $0.contains("8 steps (2.00 epochs) fit") }, "\(messages)")
        let log = try records(in: straight)
        let fitted = learningRates(recipe, iterations: 8), planned = learningRates(recipe, iterations: 12)
        XCTAssertEqual(log.map(\.lr), Array(planned[0..<1]) + Array(fitted[1..<8]), "step 1 ran before the fit, the rest on it")
        XCTAssertEqual(log.last!.momentum, Schedules.cosine(base: 0.99, final: 1, iterations: 8, warmupIterations: 0)[7])

        var first = recipe
        first.max_steps = 5
        _ = try trainer(first, split).run()
        let resumed = try trainer(recipe, split, resume: true)
        XCTAssertEqual(resumed.scheduledSteps, 8)
        XCTAssertEqual(resumed.trainedSeconds, 5)
        _ = try resumed.run()
        XCTAssertEqual(try losses(in: straight), try losses(in: split), "resumed time-boxed run diverged")
        // A run that reached the end of its fitted schedules is finished, not stopped by the box.
        messages = []
        let again = try trainer(recipe, straight, resume: true).run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertFalse(again.timeBoxReached)
        XCTAssertTrue(messages.contains { $0.contains("already at step 8, the end of the schedules max_minutes fitted") }, "\(messages)")
    }

    /// The machine slows after the fit (1 s per step over epoch 1, then 5 s), 33 s of budget: fitted at
    /// the end of epoch 1 (step 4, 4 s) to all 12 steps (4 + ⌊28.42/1⌋, at most 3 epochs); at the end
    /// of epoch 2 (step 8, 24 s) the 4 steps left would take 20 s more, so the schedules are fitted
    /// again to 9 steps (8 + ⌊8.82/5⌋), which finish in 29 s instead of being cut at step 9 of 12. Runs
    /// split by max_steps inside the pace's window (6) and at the refit (8) resume to the same losses.
    func testTimeBoxFitsAgainWhenTheStepsSlowDown() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()       // 3 epochs of 4 steps
        recipe.max_minutes = 0.55
        func trainer(_ recipe: Recipe, _ folder: URL, resume: Bool = false) throws -> Trainer {
            try clockedTrainer(recipe, folder, resume: resume) { $0 <= 4 ? Double($0) : 4 + 5 * Double($0 - 4) }
        }
        let straight = root.appendingPathComponent("straight")
        var messages: [String] = []
        let summary = try trainer(recipe, straight).run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertEqual(summary.steps, 9)
        XCTAssertFalse(summary.timeBoxReached)
        XCTAssertTrue(messages.contains { $0.contains("12 steps (3.00 epochs) fit") }, "\(messages)")
        XCTAssertTrue(messages.contains { $0.contains("slowed to 5.000 s each") && $0.contains("end at step 9 (2.25 epochs) instead of 12") },
                      "\(messages)")
        func lr(_ iterations: Int) -> [Double] { learningRates(recipe, iterations: iterations) }
        let log = try records(in: straight)
        XCTAssertEqual(log.map(\.lr), Array(lr(12)[0..<8]) + Array(lr(9)[8..<9]))
        let file = try SafeTensors.read(straight.appendingPathComponent("checkpoint.safetensors"))
        XCTAssertEqual(file.metadata["dino.scheduled_steps"], "9")

        for stop in [6, 8] {
            let split = root.appendingPathComponent("split\(stop)")
            var first = recipe
            first.max_steps = stop
            _ = try trainer(first, split).run()
            let resumed = try trainer(recipe, split, resume: true)
            XCTAssertEqual(resumed.scheduledSteps, stop == 6 ? 12 : 9)
            XCTAssertEqual(resumed.paceStart?.step, stop == 6 ? 4 : 8)
            _ = try resumed.run()
            XCTAssertEqual(try losses(in: straight), try losses(in: split), "a refitted run resumed at step \(stop) diverged")
        }
    }

    /// Refits that move the end by under 5% are applied without a line: 60 s of budget, fitted at step 4
    /// (1 s per step) to 58 steps (4 + ⌊56·0.98⌋); at step 12 a 1.05 s pace since step 8 shortens them to 56
    /// (12 + ⌊47.8·0.98/1.05⌋), 3% less: quiet; at step 16 a 2 s pace shortens them to 35
    /// (16 + ⌊39.8·0.98/2⌋), announced against the 58 the user last read.
    func testSmallRefitsAreAppliedQuietly() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.epochs = 30              // 4 steps each
        recipe.max_minutes = 1
        let run = root.appendingPathComponent("run")
        let clock: (Int) -> Double = { s in s <= 8 ? Double(s) : s <= 12 ? 8 + 1.05 * Double(s - 8) : 12.2 + 2 * Double(s - 12) }
        var messages: [String] = []
        let summary = try clockedTrainer(recipe, run, seconds: clock).run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertEqual(summary.steps, 35)
        let timeBox = messages.filter { $0.hasPrefix("time box") }
        XCTAssertEqual(timeBox.count, 2, "\(timeBox)")  // the end was printed: no closing line
        XCTAssertTrue(timeBox[0].contains("58 steps (14.50 epochs) fit"), "\(timeBox)")
        XCTAssertTrue(timeBox[1].contains("slowed to 2.000 s each") && timeBox[1].contains("end at step 35 (8.75 epochs) instead of 58"), "\(timeBox)")
        // Only the quiet refit (the 2 s stretch never comes): the run ends at 56 and says why it is not 58.
        let quiet = root.appendingPathComponent("quiet")
        messages = []
        let short = try clockedTrainer(recipe, quiet, seconds: { s in s <= 8 ? Double(s) : 8 + 1.05 * Double(s - 8) }).run {
            if case .message(let m) = $0 { messages.append(m) }
        }
        XCTAssertEqual(short.steps, 56)
        XCTAssertEqual(messages.filter { $0.hasPrefix("time box") }.last,
                       "time box: the schedules ended at step 56, not the 58 last printed (later refits, each under 5%, were applied without a line)")
        func lr(_ iterations: Int) -> [Double] { learningRates(recipe, iterations: iterations) }
        XCTAssertEqual(try records(in: run).map(\.lr), Array(lr(120)[0..<4]) + Array(lr(58)[4..<12]) + Array(lr(56)[12..<16]) + Array(lr(35)[16..<35]),
                       "the quiet refit at step 12 was applied")
    }

    /// A slow stretch in epoch 2 (3 s per step, 1 s before and after), 33 s of budget, at most 8 epochs:
    /// fitted at step 4 to all 32 steps; at step 8 (16 s) shortened to 13 (8 + ⌊16.66/3⌋); at step 12
    /// (20 s) the 1 s pace would leave 12 s unused, so lengthened to 24 (12 + ⌊12.74/1⌋), which end at
    /// 32 s instead of 21 s; a run split inside the slow stretch resumes to the same losses.
    func testTimeBoxFitsLongerWhenTheStepsSpeedUpAgain() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.epochs = 8               // 4 steps each
        recipe.max_minutes = 0.55
        func trainer(_ recipe: Recipe, _ folder: URL, resume: Bool = false) throws -> Trainer {
            try clockedTrainer(recipe, folder, resume: resume) { Double($0) + 2 * Double(min(max($0 - 4, 0), 4)) }
        }
        let straight = root.appendingPathComponent("straight")
        var messages: [String] = []
        let summary = try trainer(recipe, straight).run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertEqual(summary.steps, 24)
        XCTAssertFalse(summary.timeBoxReached)
        XCTAssertTrue(messages.contains { $0.contains("slowed to 3.000 s each") && $0.contains("end at step 13 (3.25 epochs) instead of 32") },
                      "\(messages)")
        XCTAssertTrue(messages.contains { $0.contains("sped up to 1.000 s each") && $0.contains("end at step 24 (6.00 epochs) instead of 13") },
                      "\(messages)")
        func lr(_ iterations: Int) -> [Double] { learningRates(recipe, iterations: iterations) }
        XCTAssertEqual(try records(in: straight).map(\.lr), Array(lr(32)[0..<8]) + Array(lr(13)[8..<12]) + Array(lr(24)[12..<24]))

        let split = root.appendingPathComponent("split")
        var first = recipe
        first.max_steps = 10
        _ = try trainer(first, split).run()
        _ = try trainer(recipe, split, resume: true).run()
        XCTAssertEqual(try losses(in: straight), try losses(in: split), "a lengthened run resumed at step 10 diverged")
    }

    /// The fit comes mid-epoch (at 10% of a 12 s budget, step 2) and each epoch end costs 0.3 s of
    /// evaluation: the epoch end two steps later must not read 1.15 s per step off those two steps and cut
    /// the schedules; over a whole epoch (steps 2-8, 1.1 s per step) the 11 fitted steps still fit in
    /// 11.6 s, so all of them run.
    func testTimeBoxMeasuresThePaceOverAWholeEpoch() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()       // 3 epochs of 4 steps
        recipe.max_minutes = 0.2
        let t = try clockedTrainer(recipe, root) { Double($0) + 0.3 * Double($0 / 4) }
        var messages: [String] = []
        let summary = try t.run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertTrue(messages.contains { $0.contains("11 steps (2.75 epochs) fit") }, "\(messages)")
        XCTAssertFalse(messages.contains { $0.contains("slowed") }, "\(messages)")
        XCTAssertEqual(summary.steps, 11)
        XCTAssertFalse(summary.timeBoxReached)
    }

    /// The machine slows after the fit (1 s, then 3 s per step): the run stops at the limit with a
    /// checkpoint, and resuming says the time box is spent instead of training on.
    func testTimeBoxStopsAtTheLimitAndStaysStopped() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.max_minutes = 0.15
        let t = try clockedTrainer(recipe, root) { $0 <= 1 ? Double($0) : Double(1 + 3 * ($0 - 1)) }
        var messages: [String] = []
        let summary = try t.run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertTrue(summary.timeBoxReached)
        XCTAssertEqual(summary.steps, 4)   // 1 + 3 + 3 + 3 = 10 s >= 9 s
        XCTAssertTrue(messages.contains { $0.contains("time box reached") && $0.contains("step 4 of the 8") }, "\(messages)")
        let file = try SafeTensors.read(root.appendingPathComponent("checkpoint.safetensors"))
        XCTAssertEqual(file.metadata["dino.step"], "4")
        XCTAssertEqual(file.metadata["dino.scheduled_steps"], "8")

        let again = try Trainer(recipe: recipe, output: root, resume: true)
        messages = []
        let second = try again.run { if case .message(let m) = $0 { messages.append(m) } }
        XCTAssertEqual(second.steps, 4)
        XCTAssertTrue(second.timeBoxReached)
        XCTAssertTrue(messages.contains { $0.contains("time box (max_minutes 0.15) was spent at step 4") }, "\(messages)")
    }
}

final class ThreadDeterminismTests: XCTestCase {
    let vit = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: 32, depth: 2, numHeads: 2)
    let head = HeadConfig(inDim: 32, outDim: 300, hiddenDim: 64, bottleneckDim: 32)

    /// Random crops for a batch of 16: two 28 px global and two 14 px local views per image.
    func crops() -> (globals: FloatBuffer, locals: FloatBuffer) {
        var g = RandomGenerator(seed: 8)
        let globals = kept(FloatBuffer((0..<(2 * 16 * 784)).map { _ in Float(g.nextNormal()) }))
        return (globals, kept(FloatBuffer((0..<(2 * 16 * 196)).map { _ in Float(g.nextNormal()) })))
    }

    /// A whole DINO step (forward, loss, backward, AdamW, EMA) gives the same bits on 1, 2 and 3 threads
    /// (two batch shards: one after the other, side by side, one after the other with split kernels).
    func testTrainingStepIsBitIdenticalOnOneAndTwoThreads() throws {
        let (globals, locals) = crops()
        func run(threads: Int, masking: PatchMasking?) throws -> ([Float], [Float], Float) {
            Parallel.setThreadCount(threads)
            defer { Parallel.setThreadCount(2) }
            let model = SelfDistillation(config: vit, head: head, batchSize: 16, globalSize: 28, localSize: 14, localCount: 2,
                                         patchMasking: masking)
            model.initialize(seed: 1)
            var loss: Float = 0
            for step in 0..<3 {
                var dropPath = RandomGenerator(seed: 5, stream: 0xD409, index: UInt64(step))
                loss = try model.step(globals: globals.pointer, locals: locals.pointer,
                                      settings: StepSettings(learningRate: 1e-3, weightDecay: 0.04, teacherMomentum: 0.99,
                                                             teacherTemperature: 0.04, freezeLastLayer: step == 0, clip: 3,
                                                             dropPathRate: 0.1, maskedPatchWeight: masking == nil ? 0 : 1),
                                      dropPath: &dropPath).loss
            }
            return (model.student.array, model.teacher.array, loss)
        }
        // Plain DINO, and with the masked-patch term (its rows through the head, the scatter into the backbone).
        for masking in [nil, PatchMasking(probability: 0.5, minimumRatio: 0.1, maximumRatio: 0.5)] {
            let one = try run(threads: 1, masking: masking)
            for threads in [2, 3] {
                let other = try run(threads: threads, masking: masking)
                XCTAssertEqual(one.2, other.2)
                XCTAssertEqual(one.0, other.0, "student parameters differ between 1 and \(threads) threads (masking \(masking != nil))")
                XCTAssertEqual(one.1, other.1, "teacher parameters differ between 1 and \(threads) threads (masking \(masking != nil))")
            }
        }
    }

    /// The batch split into two shards (the default: halves run side by side on 2 threads, gradients
    /// summed in shard order) against one pass over the whole batch: the same losses, every gradient of
    /// the first step and the parameters after three steps, float rounding apart.
    func testBatchShardsGiveTheUnshardedStep() throws {
        let (globals, locals) = crops()
        func run(shards: Int) throws -> (losses: [Float], firstGradients: [Float], model: SelfDistillation) {
            let model = SelfDistillation(config: vit, head: head, batchSize: 16, globalSize: 28, localSize: 14, localCount: 2,
                                         shards: shards)
            XCTAssertEqual(model.shards, shards)
            model.initialize(seed: 1)
            var losses: [Float] = [], first: [Float] = []
            var generator = RandomGenerator(seed: 5)
            for step in 0..<3 {
                losses.append(try model.step(globals: globals.pointer, locals: locals.pointer,
                                             settings: StepSettings(learningRate: 1e-3, weightDecay: 0.04, teacherMomentum: 0.99,
                                                                    teacherTemperature: 0.04, freezeLastLayer: false, clip: 3,
                                                                    dropPathRate: 0, koleoWeight: 0.1),
                                             dropPath: &generator).loss)
                if step == 0 { first = model.gradients.array }
            }
            return (losses, first, model)
        }
        let sharded = try run(shards: 2), whole = try run(shards: 1)
        assertClose(sharded.losses, whole.losses, tolerance: 1e-5, "losses")
        for entry in sharded.model.layout.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            assertClose(Array(sharded.firstGradients[range]), Array(whole.firstGradients[range]), tolerance: 1e-4, "grad \(entry.name)")
        }
        assertClose(sharded.model.student.array, whole.model.student.array, tolerance: 1e-4, "student after 3 steps")
        assertClose(sharded.model.teacher.array, whole.model.teacher.array, tolerance: 1e-4, "teacher after 3 steps")
    }

    /// Three steps of `model` from seed 1 on `crops()`, each with the trainer's per-step drop-path generator:
    /// the losses and the first step's gradients.
    func threeSteps(_ model: SelfDistillation, dropPathRate: Double) throws -> (losses: [Float], firstGradients: [Float]) {
        let (globals, locals) = crops()
        model.initialize(seed: 1)
        var losses: [Float] = [], first: [Float] = []
        for step in 0..<3 {
            var dropPath = RandomGenerator(seed: 5, stream: 0xD409, index: UInt64(step))
            losses.append(try model.step(globals: globals.pointer, locals: locals.pointer,
                                         settings: StepSettings(learningRate: 1e-3, weightDecay: 0.04, teacherMomentum: 0.99,
                                                                teacherTemperature: 0.04, freezeLastLayer: false, clip: 3,
                                                                dropPathRate: dropPathRate),
                                         dropPath: &dropPath).loss)
            if step == 0 { first = model.gradients.array }
        }
        return (losses, first)
    }

    /// Two models' three steps agree within float rounding: losses, every first-step gradient, the teacher after.
    func assertSameSteps(_ a: SelfDistillation, _ b: SelfDistillation, dropPathRate: Double, _ label: String) throws {
        let first = try threeSteps(a, dropPathRate: dropPathRate), second = try threeSteps(b, dropPathRate: dropPathRate)
        assertClose(first.losses, second.losses, tolerance: 1e-5, "losses, \(label)")
        for entry in a.layout.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            assertClose(Array(first.firstGradients[range]), Array(second.firstGradients[range]), tolerance: 1e-4,
                        "grad \(entry.name), \(label)")
        }
        assertClose(a.teacher.array, b.teacher.array, tolerance: 1e-4, "teacher after 3 steps, \(label)")
    }

    /// The last block for the class token alone (the default) against every token through it, with drop
    /// path on: the same losses and every gradient of the first step (float rounding apart: the shorter
    /// products take other GEMM tiles).
    func testClassTokenOnlyLastBlockGivesTheFullStep() throws {
        func model(classTokenOnly: Bool) -> SelfDistillation {
            SelfDistillation(config: vit, head: head, batchSize: 16, globalSize: 28, localSize: 14, localCount: 2,
                             classTokenOnly: classTokenOnly)
        }
        try assertSameSteps(model(classTokenOnly: true), model(classTokenOnly: false), dropPathRate: 0.2, "class token only")
    }

    /// Drop path that runs each branch on the images that keep it alone (the default) against the whole
    /// batch multiplied by 0 (the official way): the same losses, first-step gradients and teacher after 3
    /// steps, with and without the class-token-only last block. At rate 0.5 most branches drop some
    /// images; at 0.95 the last block's branches (keep 0.05) mostly drop every image of a shard.
    func testSkippingDroppedImagesGivesTheWholeBatchStep() throws {
        func model(classTokenOnly: Bool, skips: Bool) -> SelfDistillation {
            SelfDistillation(config: vit, head: head, batchSize: 16, globalSize: 28, localSize: 14, localCount: 2,
                             classTokenOnly: classTokenOnly, skipsDroppedImages: skips)
        }
        for rate in [0.5, 0.95] {
            for classTokenOnly in [true, false] {
                try assertSameSteps(model(classTokenOnly: classTokenOnly, skips: true), model(classTokenOnly: classTokenOnly, skips: false),
                                    dropPathRate: rate, "rate \(rate)\(classTokenOnly ? ", class token only" : "")")
            }
        }
    }
}
