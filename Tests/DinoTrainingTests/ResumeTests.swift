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

func losses(in folder: URL) throws -> [Float] {
    let text = try String(contentsOf: folder.appendingPathComponent("log.jsonl"), encoding: .utf8)
    return try text.split(separator: "\n").map { line in
        let record = try JSONDecoder().decode(StepRecord.self, from: Data(line.utf8))
        return record.loss
    }
}

final class ResumeTests: XCTestCase {
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

final class ThreadDeterminismTests: XCTestCase {
    /// A whole DINO step (forward, loss, backward, AdamW, EMA) gives the same bits on 1 and 2 threads.
    func testTrainingStepIsBitIdenticalOnOneAndTwoThreads() throws {
        let vit = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: 32, depth: 2, numHeads: 2)
        let head = HeadConfig(inDim: 32, outDim: 300, hiddenDim: 64, bottleneckDim: 32)
        var g = RandomGenerator(seed: 8)
        let globals = kept(FloatBuffer((0..<(2 * 16 * 784)).map { _ in Float(g.nextNormal()) }))
        let locals = kept(FloatBuffer((0..<(2 * 16 * 196)).map { _ in Float(g.nextNormal()) }))
        func run(threads: Int) throws -> ([Float], [Float], Float) {
            Parallel.setThreadCount(threads)
            defer { Parallel.setThreadCount(2) }
            let model = SelfDistillation(config: vit, head: head, batchSize: 16, globalSize: 28, localSize: 14, localCount: 2)
            model.initialize(seed: 1)
            var loss: Float = 0
            for step in 0..<3 {
                var dropPath = RandomGenerator(seed: 5, stream: 0xD409, index: UInt64(step))
                loss = try model.step(globals: globals.pointer, locals: locals.pointer,
                                      settings: StepSettings(learningRate: 1e-3, weightDecay: 0.04, teacherMomentum: 0.99,
                                                             teacherTemperature: 0.04, freezeLastLayer: step == 0, clip: 3,
                                                             dropPathRate: 0.1),
                                      dropPath: &dropPath).loss
            }
            return (model.student.array, model.teacher.array, loss)
        }
        let one = try run(threads: 1), two = try run(threads: 2)
        XCTAssertEqual(one.2, two.2)
        XCTAssertEqual(one.0, two.0, "student parameters differ between 1 and 2 threads")
        XCTAssertEqual(one.1, two.1, "teacher parameters differ between 1 and 2 threads")
    }
}
