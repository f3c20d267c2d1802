import DinoData
import DinoKernels
import DinoModel
import DinoTraining
import Foundation
import XCTest

/// `dino train` and `dino quickstart` as processes: a tiny run's outputs, bad recipes and data, and
/// crash safety (SIGKILL at random points, a full disk, a read-only folder).
final class TrainingCommandTests: XCTestCase {
    /// 32 gray 16x16 PNGs in two classes (dark and light blobs on noise).
    static let dataFolder: URL = {
        let folder = makeTemporaryFolder("dino-cli-train-data")
        var generator = RandomGenerator(seed: 11)
        for c in 0..<2 {
            let classFolder = folder.appendingPathComponent("class\(c)")
            try! FileManager.default.createDirectory(at: classFolder, withIntermediateDirectories: true)
            for i in 0..<16 {
                let pixels = (0..<256).map { p -> UInt8 in
                    let (x, y) = (p % 16, p / 16)
                    let inside = abs(x - 4 - i % 8) < 3 + c && abs(y - 8) < 3 + 2 * c
                    return UInt8(inside ? 200 : 0) &+ UInt8(generator.next() % 40)
                }
                try! ImageCodec.encodePNG(Image(width: 16, height: 16, channels: 1, pixels: pixels))
                    .write(to: classFolder.appendingPathComponent("\(i).png"))
            }
        }
        return folder
    }()

    /// A 1-block, 16-wide ViT on the folder: 4 steps per epoch, k-NN and attention during training,
    /// a checkpoint every step.
    static func recipe(epochs: Int = 4, extra: String = "") -> URL {
        let text = """
        arch: custom
        embed_dim: 16
        depth: 1
        num_heads: 2
        patch_size: 4
        in_chans: 1
        out_dim: 32
        head_hidden_dim: 32
        bottleneck_dim: 16
        global_crop_size: 16
        local_crop_size: 8
        local_crops_number: 2
        batch_size: 8
        epochs: \(epochs)
        warmup_epochs: 1
        lr: 0.002
        dataset: folder
        data_path: \(dataFolder.path)
        num_workers: 1
        knn_every: 1
        knn_train_size: 24
        knn_eval_size: 8
        knn_k: 5
        attention_every: 2
        attention_images: 2
        checkpoint_every: 1
        seed: 3
        \(extra)
        """
        let url = makeTemporaryFolder("dino-cli-recipe").appendingPathComponent("tiny.yaml")
        try! Data(text.utf8).write(to: url)
        return url
    }

    /// (step, loss, KL, teacher entropy) of every line of a run's log.
    func logged(_ run: URL) throws -> [[Double]] {
        try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8).split(separator: "\n").map { line in
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return try ["step", "loss", "kl", "teacher_entropy"].map { try XCTUnwrap(object[$0] as? Double, "\($0) in \(line)") }
        }
    }

    func teacher(_ run: URL) throws -> [Float] {
        try SafeTensors.read(run.appendingPathComponent("checkpoint.safetensors")).tensors
            .filter { $0.name.hasPrefix("teacher.") }.flatMap(\.values)
    }

    func testTrainWritesARun() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let result = runDino(["train", "--recipe", Self.recipe(epochs: 2).path, "--output", run.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("finished 8 steps"), result.stdout)
        XCTAssertTrue(result.stdout.contains("epoch 1 (step 4): teacher k-NN top-1"), result.stdout)
        let log = try logged(run)
        XCTAssertEqual(log.map { Int($0[0]) }, Array(1...8))
        XCTAssertTrue(log.allSatisfy { $0[1].isFinite })
        // The k-NN at random init (epoch 0), then after each epoch.
        XCTAssertEqual(try String(contentsOf: run.appendingPathComponent("knn.jsonl"), encoding: .utf8).split(separator: "\n").count, 3)
        let backbone = try BackboneCheckpoint.load(from: run.appendingPathComponent("teacher_backbone.safetensors"))
        XCTAssertEqual(backbone.config.embedDim, 16)
        XCTAssertTrue(try String(contentsOf: run.appendingPathComponent("recipe.yaml"), encoding: .utf8).contains("embed_dim: 16"))
        XCTAssertFalse(files(in: run.appendingPathComponent("attention")).isEmpty)
        XCTAssertFalse(files(in: run).contains { $0.hasSuffix(".tmp") }, "\(files(in: run))")
        // The report, written at the end: one page with every picture inline, and the curves as PNG.
        XCTAssertTrue(result.stdout.contains("report: \(run.path)/report.html"), result.stdout)
        let html = try String(contentsOf: run.appendingPathComponent("report.html"), encoding: .utf8)
        for section in ["<h2>Loss</h2>", "<h2>Teacher entropy and KL</h2>", "<h2>k-NN during training</h2>", "<h2>k-NN confusion matrix</h2>",
                        "<h2>The teacher's features</h2>", "<h2>Schedules</h2>", "<h2>Attention after epoch 2</h2>", "<h2>Recipe</h2>"] {
            XCTAssertTrue(html.contains(section), "report.html lacks \(section)")
        }
        XCTAssertFalse(html.contains("src=\"http"), "the report must not fetch anything")
        XCTAssertFalse(html.contains("<script"), "the report needs no script")
        for name in ["loss.png", "collapse.png", "knn.png", "confusion.png", "features-pca.png", "schedule-lr.png", "speed.png"] {
            let picture = try ImageCodec.decode(contentsOf: run.appendingPathComponent("report").appendingPathComponent(name), channels: 3)
            XCTAssertGreaterThan(picture.width, 200, name)
        }
        let again = runDino(["report", run.path, "--no-evaluation"])
        assertSucceeded(again)
        XCTAssertTrue(again.stdout.contains("report.html"), again.stdout)
        // The run folder stands for its teacher in every command that takes --checkpoint.
        func knnResults(_ checkpoint: URL) throws -> NSArray? {
            let result = runDino(["knn", "--checkpoint", checkpoint.path, "--train", Self.dataFolder.path, "--validation", "--k", "3", "--json"])
            assertSucceeded(result)
            return (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["results"] as? NSArray
        }
        let viaFolder = try knnResults(run)
        XCTAssertNotNil(viaFolder)
        XCTAssertEqual(viaFolder, try knnResults(run.appendingPathComponent("teacher_backbone.safetensors")))
        assertRefused(runDino(["knn", "--checkpoint", Self.dataFolder.path, "--train", Self.dataFolder.path, "--validation"]),
                      "teacher_backbone.safetensors (a dino run); give the checkpoint file itself")
        assertRefused(runDino(["report", Self.dataFolder.path]), "not a run folder")
        assertRefused(runDino(["report", run.appendingPathComponent("nowhere").path]), "nowhere does not exist: give the --output folder")
        assertRefused(runDino(["report", run.appendingPathComponent("recipe.yaml").path]), "recipe.yaml is a file: give the run folder it is in")
        assertRefused(runDino(["report"]), "RUN", status: 64)
        // The run folder holds a run: without --resume it is refused, with it there is nothing left to do.
        assertRefused(runDino(["train", "--recipe", Self.recipe(epochs: 2).path, "--output", run.path]), "--resume")
        let resumed = runDino(["train", "--recipe", Self.recipe(epochs: 2).path, "--output", run.path, "--resume"])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("nothing to train"), resumed.stdout)
        XCTAssertFalse(resumed.stdout.contains("nothing to resume"), resumed.stdout)
        // --resume on a folder with no checkpoint yet (a job script that always passes it) starts the run, and says so.
        let fresh = makeTemporaryFolder().appendingPathComponent("fresh")
        let started = runDino(["train", "--recipe", Self.recipe(epochs: 1).path, "--output", fresh.path, "--resume"])
        assertSucceeded(started)
        XCTAssertTrue(started.stdout.contains("nothing to resume in \(fresh.path) yet (no checkpoint.safetensors): starting the run from step 0"),
                      started.stdout)
        XCTAssertTrue(started.stdout.contains("finished 4 steps"), started.stdout)
    }

    /// The recipe's `eval_resize` is written into both checkpoints, and every command that evaluates the
    /// run's teacher uses it unless given --resize, with a note saying so (stderr: --json stays JSON).
    func testEvalResizeGoesFromTheRecipeToTheEvaluations() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        assertSucceeded(runDino(["train", "--recipe", Self.recipe(epochs: 1, extra: "eval_resize: 20").path, "--output", run.path]))
        for name in ["teacher_backbone.safetensors", "checkpoint.safetensors"] {
            XCTAssertEqual(try SafeTensors.read(run.appendingPathComponent(name)).metadata["dino.eval_resize"], "20", name)
        }
        func knn(_ extra: [String]) throws -> (ProcessResult, NSArray?) {
            let result = runDino(["knn", "--checkpoint", run.path, "--train", Self.dataFolder.path, "--validation", "--k", "3", "--json"] + extra)
            assertSucceeded(result)
            return (result, (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["results"] as? NSArray)
        }
        let (byRecipe, recipeResults) = try knn([])
        XCTAssertTrue(byRecipe.stderr.contains("note: each image evaluated as short side 20 px, the central 16x16 (the recipe's eval_resize); --resize 18 evaluates as eval_knn.py (short side 18 px, the central 16x16)"),
                      byRecipe.stderr)
        let (given, givenResults) = try knn(["--resize", "20"])
        XCTAssertFalse(given.stderr.contains("note:"), given.stderr)
        XCTAssertEqual(recipeResults, givenResults)
        let features = run.deletingLastPathComponent().appendingPathComponent("f.npy")
        let extracted = runDino(["features", "--checkpoint", run.path, "--data", Self.dataFolder.path, "--output", features.path])
        assertSucceeded(extracted)
        XCTAssertTrue(extracted.stderr.contains("(the recipe's eval_resize)"), extracted.stderr)
        // dino convert keeps it.
        let converted = run.deletingLastPathComponent().appendingPathComponent("converted.safetensors")
        assertSucceeded(runDino(["convert", run.appendingPathComponent("checkpoint.safetensors").path, converted.path]))
        XCTAssertEqual(try SafeTensors.read(converted).metadata["dino.eval_resize"], "20")
        // At another input size the recipe's resize does not apply, and no note says it does.
        let other = runDino(["knn", "--checkpoint", run.path, "--train", Self.dataFolder.path, "--validation", "--k", "3", "--input-size", "12"])
        assertSucceeded(other)
        XCTAssertFalse(other.stderr.contains("note:"), other.stderr)
    }

    /// A run started with --init-from resumes to the same bits as the whole run, through the head warm-up
    /// (the first 8 of 16 steps) and the backbone's lr ramp, and without the file it started from.
    func testInitFromRunResumesExactlyWithoutItsFile() throws {
        let folder = makeTemporaryFolder()
        let start = folder.appendingPathComponent("start.safetensors")
        try FileManager.default.copyItem(at: Inputs.grayBackbone, to: start)
        let whole = folder.appendingPathComponent("whole"), split = folder.appendingPathComponent("split")
        let common = ["--recipe", Self.recipe(epochs: 4).path, "--init-from", start.path, "--set", "knn_every=0", "--set", "attention_every=0"]
        assertSucceeded(runDino(["train", "--output", whole.path] + common))
        let first = runDino(["train", "--output", split.path, "--set", "max_steps=6"] + common)
        assertSucceeded(first)
        XCTAssertTrue(first.stdout.contains("steps 0..<8 train the head alone"), first.stdout)
        try FileManager.default.removeItem(at: start)
        let resumed = runDino(["train", "--output", split.path, "--resume"] + common)
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("resuming a run that started from"), resumed.stdout)
        XCTAssertEqual(try logged(split), try logged(whole))
        XCTAssertEqual(try teacher(split), try teacher(whole))
    }

    /// DINOv2's backbone options from the recipe: registers, LayerScale and SwiGLU train, and the teacher
    /// backbone file carries them; so does `mlp_ratio`, and a ratio out of range is refused before training.
    func testTrainWithDINOv2BackboneOptions() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        assertSucceeded(runDino(["train", "--recipe", Self.recipe(epochs: 1).path, "--output", run.path,
                                 "--set", "knn_every=0", "--set", "attention_every=0", "--set", "num_register_tokens=2", "--set", "layerscale=1e-5", "--set", "ffn_layer=swiglu"]))
        let config = try BackboneCheckpoint.load(from: run.appendingPathComponent("teacher_backbone.safetensors")).config
        XCTAssertEqual([config.registerCount, config.usesLayerScale ? 1 : 0, config.usesSwiGLU ? 1 : 0], [2, 1, 1])
        let narrow = makeTemporaryFolder().appendingPathComponent("narrow")
        assertSucceeded(runDino(["train", "--recipe", Self.recipe(epochs: 1).path, "--output", narrow.path,
                                 "--set", "knn_every=0", "--set", "attention_every=0", "--set", "mlp_ratio=2"]))
        let narrowConfig = try BackboneCheckpoint.load(from: narrow.appendingPathComponent("teacher_backbone.safetensors")).config
        XCTAssertEqual([narrowConfig.mlpRatio, narrowConfig.hiddenDim], [2, 2 * narrowConfig.embedDim])
        let refused = makeTemporaryFolder().appendingPathComponent("refused")
        assertRefused(runDino(["train", "--recipe", Self.recipe(epochs: 1).path, "--output", refused.path, "--set", "mlp_ratio=0"]),
                      "mlp_ratio must be 1...16")
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused.appendingPathComponent("checkpoint.safetensors").path))
    }

    /// `koleo_loss_weight_end` anneals the KoLeo weight by a per-step cosine; each log line carries the
    /// weight beside the weighted term, so the regularizer itself can be read back.
    func testAnnealedKoLeoWeightIsLogged() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        assertSucceeded(runDino(["train", "--recipe", Self.recipe(epochs: 2).path, "--output", run.path, "--set", "knn_every=0",
                                 "--set", "attention_every=0", "--set", "koleo_loss_weight=0.1", "--set", "koleo_loss_weight_end=0"]))
        let lines = try String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8).split(separator: "\n")
        let logged = try lines.map { line -> (weight: Double, term: Double) in
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return (try XCTUnwrap(object["koleo_weight"] as? Double, "\(line)"), try XCTUnwrap(object["koleo"] as? Double, "\(line)"))
        }
        XCTAssertEqual(logged.count, 8)
        // 0.1 at the first step, falling every step, 0 + (0.1 - 0)(1 + cos(π·7/8))/2 ≈ 0.0038 at the last.
        XCTAssertEqual(logged[0].weight, 0.1, accuracy: 1e-9)
        XCTAssertEqual(logged[7].weight, 0.05 * (1 + cos(Double.pi * 7 / 8)), accuracy: 1e-6)
        XCTAssertTrue(zip(logged, logged.dropFirst()).allSatisfy { $0.weight > $1.weight }, "\(logged)")
        XCTAssertTrue(logged.allSatisfy { $0.term.isFinite && $0.term / $0.weight > 0 }, "\(logged)")
    }

    /// OpenBLAS falls back to its SSE3 kernels ("Prescott") on CPUs newer than it; `dino` then starts again
    /// with `OPENBLAS_CORETYPE` set, so a float32 run names the AVX2 or AVX-512 kernel set the CPU runs. The
    /// variable is left as the environment has it: where it is set, the run names that set.
    func testTrainNamesTheKernelSetTheCPURuns() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let result = runDino(["train", "--output", run.path, "--recipe", Self.recipe(epochs: 1).path, "--set", "max_steps=1",
                              "--set", "attention_every=0", "--set", "knn_every=0"])
        assertSucceeded(result)
        let expected = BLASKernels.replacementForThisMachine ?? Parallel.blasCoreName
        XCTAssertTrue(result.stdout.contains("OpenBLAS \(expected) kernels"), "expected \(expected): \(result.stdout)")
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil && BLASKernels.vectorLevel > 0 {
            XCTAssertFalse(result.stdout.contains("OpenBLAS Prescott kernels"), result.stdout)
        }
    }

    /// `matmul_precision: bfloat16` trains (or says that this CPU runs float32), is written to the run's
    /// recipe, and resumes to the same bits as the whole run.
    func testTrainInBFloat16ResumesExactly() throws {
        let folder = makeTemporaryFolder()
        let whole = folder.appendingPathComponent("whole"), split = folder.appendingPathComponent("split")
        let common = ["--recipe", Self.recipe(epochs: 2).path, "--set", "matmul_precision=bfloat16", "--set", "attention_every=0"]
        let result = runDino(["train", "--output", whole.path] + common)
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains(GEMM.bfloat16Available ? "bfloat16 matmuls (\(GEMM.bfloat16KernelName ?? ""))" : "this CPU has no AVX-512 BF16"),
                      result.stdout)
        XCTAssertTrue(try String(contentsOf: whole.appendingPathComponent("recipe.yaml"), encoding: .utf8)
            .contains("matmul_precision: \"bfloat16\""))
        let log = try logged(whole)
        XCTAssertEqual(log.count, 8)
        XCTAssertTrue(log.allSatisfy { $0[1].isFinite && $0[3].isFinite }, "\(log)")
        assertSucceeded(runDino(["train", "--output", split.path, "--set", "max_steps=5"] + common))
        assertSucceeded(runDino(["train", "--output", split.path, "--resume"] + common))
        XCTAssertEqual(try logged(split), log)
        XCTAssertEqual(try teacher(split), try teacher(whole))
        // The same run in float32 is a different run: the switch reaches the training step.
        let float = folder.appendingPathComponent("float")
        assertSucceeded(runDino(["train", "--output", float.path, "--recipe", Self.recipe(epochs: 2).path, "--set", "attention_every=0"]))
        if GEMM.bfloat16Available { XCTAssertNotEqual(try teacher(float), try teacher(whole)) }
    }

    func testTrainRefusesBadRecipesAndData() throws {
        let folder = makeTemporaryFolder()
        let run = folder.appendingPathComponent("run")
        func train(_ recipe: URL, _ extra: [String] = []) -> ProcessResult {
            runDino(["train", "--recipe", recipe.path, "--output", run.path] + extra)
        }
        func recipeFile(_ name: String, _ text: String) -> URL { Inputs.file(name, Data(text.utf8)) }
        assertRefused(train(folder.appendingPathComponent("missing.yaml")), "missing.yaml", "does not exist")
        assertRefused(train(recipeFile("empty.yaml", "")), "empty.yaml", "is empty")
        assertRefused(train(recipeFile("comments.yaml", "# nothing here\n")), "comments.yaml", "is empty")
        assertRefused(train(recipeFile("binary.yaml", String(decoding: [0xFF, 0xFE, 0x00, 0x41], as: UTF8.self))), "binary.yaml")
        assertRefused(train(recipeFile("broken.yaml", "arch: [custom\nlr: {")), "broken.yaml", "not valid YAML")
        assertRefused(train(recipeFile("list.yaml", "- arch\n- lr\n")), "list.yaml", "mapping")
        assertRefused(train(recipeFile("typo.yaml", "learning_rate: 0.1\n")), "unknown recipe key 'learning_rate'")
        assertRefused(train(recipeFile("twice.yaml", "lr: 0.1\nepochs: 2\nlr: 0.2\n")), "twice.yaml: key 'lr' is set twice (again on line 3); keep one")
        assertRefused(train(recipeFile("type.yaml", "batch_size: many\n")), "batch_size", "integer")
        assertRefused(train(Self.recipe(), ["--set", "batch_size=0"]), "batch_size must be at least 1")
        assertRefused(train(Self.recipe(), ["--set", "batch_size=100000000"]), "batch_size must be at most")
        assertRefused(train(Self.recipe(), ["--set", "lr=-1"]), "lr")
        assertRefused(train(Self.recipe(), ["--set", "lr=.nan"]), "lr")
        assertRefused(train(Self.recipe(), ["--set", "seed=-4"]), "error: recipe: counts must be 0 or more, not seed -4")
        assertRefused(train(Self.recipe(), ["--set", "knn_every=1", "--set", "knn_eval_size=0"]),
                      "error: recipe: knn_eval_size and knn_train_size must be at least 1 while knn_every is on (1)")
        assertRefused(train(Self.recipe(), ["--set", "blur_prob=[0.5]"]), "key 'blur_prob' expects a list of 3 numbers, got a list of 1")
        assertRefused(train(Self.recipe(), ["--set", "embed_dim=100000000"]), "out of range")
        assertRefused(train(Self.recipe(), ["--set", "out_dim=1000000000"]), "out of range")
        assertRefused(train(Self.recipe(), ["--set", "global_crop_size=2"]), "patch_size")
        assertRefused(train(Self.recipe(), ["--set", "batch_size=65536", "--set", "global_crop_size=4096"]),
                      "GiB of activations", "lower batch_size")
        assertRefused(train(Self.recipe(), ["--set", "in_chans=2"]), "in_chans must be 1 or 3")
        assertRefused(train(Self.recipe(), ["--set", "ffn_layer=gelu"]), "ffn_layer must be mlp or swiglufused")
        assertRefused(train(Self.recipe(), ["--set", "num_register_tokens=-1"]), "num_register_tokens")
        assertRefused(train(Self.recipe(), ["--set", "momentum_teacher=2"]), "momentum_teacher")
        assertRefused(train(Self.recipe(), ["--set", "matmul_precision=half"]), "matmul_precision must be float32 or bfloat16")
        assertRefused(train(Self.recipe(), ["--set", "koleo_loss_weight_end=-0.5"]), "koleo_loss_weight_end must be 0 or more")
        assertRefused(train(Self.recipe(), ["--set", "noequals"]), "key=value")
        assertRefused(train(Self.recipe(), ["--threads", "0"]), "--threads", status: 64)
        // Data: missing, empty, too small for a batch, not images.
        assertRefused(train(Self.recipe(), ["--set", "data_path=\(folder.appendingPathComponent("none").path)"]), "does not exist")
        let empty = folder.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        assertRefused(train(Self.recipe(), ["--set", "data_path=\(empty.path)"]), "no JPEG or PNG images")
        assertRefused(train(Self.recipe(), ["--set", "batch_size=64"]), "fewer than one batch")
        assertRefused(train(Self.recipe(), ["--set", "dataset=cifar"]), "unknown dataset 'cifar'")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("checkpoint.safetensors").path))
        // An output path under a file: refused before the recipe is read.
        let file = Inputs.file("a-file", Data("x".utf8))
        assertRefused(runDino(["train", "--recipe", Self.recipe().path, "--output", file.appendingPathComponent("run").path]),
                      "lies under \(file.path), which is a file", status: 64)
    }

    func testResumeRefusesBadCheckpointsAndKeepsThem() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let recipe = Self.recipe(epochs: 2)
        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--output", run.path, "--set", "max_steps=3"]))
        let checkpoint = run.appendingPathComponent("checkpoint.safetensors")
        let good = try Data(contentsOf: checkpoint)
        func resume(_ extra: [String] = []) -> ProcessResult {
            runDino(["train", "--recipe", recipe.path, "--output", run.path, "--resume"] + extra)
        }
        for (name, bytes) in [("truncated", good.prefix(good.count / 2)), ("empty", Data()), ("noise", Data(count: 4096))] {
            try bytes.write(to: checkpoint)
            assertRefused(resume(), "checkpoint.safetensors")
            XCTAssertEqual(try Data(contentsOf: checkpoint), bytes, "a refused resume changed the \(name) checkpoint")
        }
        try good.write(to: checkpoint)
        assertRefused(resume(["--set", "embed_dim=32", "--set", "num_heads=4"]), "different architecture")
        assertRefused(resume(["--set", "batch_size=4"]), "steps per epoch")
        // A backbone file where the training checkpoint should be.
        try Data(contentsOf: run.appendingPathComponent("teacher_backbone.safetensors")).write(to: checkpoint)
        assertRefused(resume(), "not a training checkpoint")
        try good.write(to: checkpoint)
        assertSucceeded(resume())
    }

    /// SIGKILL at random points (steps, checkpoint writes, the per-epoch k-NN and attention export),
    /// then `--resume`, until the run ends: the same losses and the same teacher as a run never killed,
    /// and after every kill a checkpoint that reads whole (or none yet).
    func testKilledRunsResumeToTheSameResult() throws {
        let root = makeTemporaryFolder()
        let recipe = Self.recipe(epochs: 16)
        let straight = root.appendingPathComponent("straight"), killed = root.appendingPathComponent("killed")
        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--output", straight.path]))
        // Eight kill points: once the log reaches a random step (64 in all), a further 0-15 ms, which lands
        // in that step's checkpoint write, the next step, or an epoch's k-NN and attention export.
        var generator = RandomGenerator(seed: 42)
        var targets = Set<Int>()
        while targets.count < 8 { targets.insert(1 + Int(generator.next() % 60)) }
        var pending = targets.sorted()
        var kills = 0, resumed = false, killedAt: [String] = []
        let log = killed.appendingPathComponent("log.jsonl")
        func lastLoggedStep() -> Int {
            guard let text = try? String(contentsOf: log, encoding: .utf8),
                  let line = text.split(separator: "\n").last(where: { $0.hasSuffix("}") }),
                  let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return 0 }
            return object["step"] as? Int ?? 0
        }
        while true {
            let process = startDino(["train", "--recipe", recipe.path, "--output", killed.path] + (resumed ? ["--resume"] : []))
            if let target = pending.first {
                let deadline = Date().addingTimeInterval(120)
                while process.process.isRunning && lastLoggedStep() < target && Date() < deadline { usleep(2_000) }
                usleep(UInt32(generator.next() % 15_000))
                if process.process.isRunning { kill(process.process.processIdentifier, SIGKILL) }
                pending.removeFirst()
            }
            let result = process.finish()
            resumed = true
            if result.signal == nil {
                assertSucceeded(result)
                break
            }
            XCTAssertEqual(result.signal, SIGKILL)
            kills += 1
            let checkpoint = killed.appendingPathComponent("checkpoint.safetensors")
            if FileManager.default.fileExists(atPath: checkpoint.path) {
                XCTAssertNoThrow(try SafeTensors.read(checkpoint), "a kill left a checkpoint that does not read")
                let step = (try? SafeTensors.read(checkpoint))?.metadata["dino.step"] ?? "?"
                let temporary = files(in: killed).contains { $0.hasSuffix(".tmp") } ? " (mid-write)" : ""
                killedAt.append("after step \(step)\(temporary)")
            } else {
                killedAt.append("before the first checkpoint")
            }
        }
        print("killed \(kills) times: \(killedAt.joined(separator: ", "))")
        XCTAssertGreaterThanOrEqual(kills, 5, "the kills should interrupt the run several times")
        XCTAssertEqual(try logged(killed), try logged(straight), "the losses differ after \(kills) kills")
        XCTAssertEqual(try teacher(killed), try teacher(straight), "the teacher differs after \(kills) kills")
        XCTAssertEqual(try String(contentsOf: killed.appendingPathComponent("knn.jsonl"), encoding: .utf8),
                       try String(contentsOf: straight.appendingPathComponent("knn.jsonl"), encoding: .utf8))
        XCTAssertFalse(files(in: killed).contains { $0.hasSuffix(".tmp") }, "\(files(in: killed))")
    }

    /// Two runs on one folder: the second (`--resume` typed while the first still runs, or a quick start)
    /// is refused naming the first's process, which trains on; once the first is killed the folder is
    /// free again without anything cleared by hand (the next refusal is the ordinary "already holds a run").
    func testASecondRunOnTheSameFolderIsRefused() throws {
        let recipe = Self.recipe(epochs: 1000)
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let first = startDino(["train", "--recipe", recipe.path, "--output", run.path])
        let log = run.appendingPathComponent("log.jsonl")
        let deadline = Date().addingTimeInterval(120)
        while first.process.isRunning && !FileManager.default.fileExists(atPath: log.path) && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(first.process.isRunning, "the first run ended before the second started")
        let pid = first.process.processIdentifier
        assertRefused(runDino(["train", "--recipe", recipe.path, "--output", run.path, "--resume"], timeout: 60),
                      "\(run.path) is in use by another dino run (process \(pid)): wait for it to end or stop it, or choose another --output")
        assertRefused(runDino(["quickstart", "--output", run.path, "--resume"], timeout: 60), "is in use by another dino run (process \(pid))")
        XCTAssertTrue(first.process.isRunning, "a refused run stopped the first")
        kill(pid, SIGKILL)
        XCTAssertEqual(first.finish().signal, SIGKILL)
        assertRefused(runDino(["train", "--recipe", recipe.path, "--output", run.path], timeout: 60), "already holds a run")
        XCTAssertFalse(files(in: run).contains { $0.hasSuffix(".tmp") }, "\(files(in: run))")
    }

    /// A disk that fills (a file-size limit) and a folder that cannot be written: a clear error, and the
    /// last good checkpoint stays, from which the run continues to the same losses.
    func testFullDiskAndReadOnlyFolderKeepTheLastCheckpoint() throws {
        let root = makeTemporaryFolder()
        let recipe = Self.recipe(epochs: 2)
        let straight = root.appendingPathComponent("straight"), run = root.appendingPathComponent("run")
        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--output", straight.path]))
        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--output", run.path, "--set", "max_steps=3"]))
        let checkpoint = run.appendingPathComponent("checkpoint.safetensors")
        let good = try Data(contentsOf: checkpoint)

        // sh's ulimit -f counts 512-byte blocks: 40 KiB, less than one checkpoint.
        let full = runDino(["train", "--recipe", recipe.path, "--output", run.path, "--resume"], shellPrefix: "ulimit -f 80")
        assertRefused(full, "cannot write", "checkpoint.safetensors")
        XCTAssertEqual(try Data(contentsOf: checkpoint), good, "the last good checkpoint was changed")
        XCTAssertFalse(files(in: run).contains { $0.hasSuffix(".tmp") }, "\(files(in: run))")

        // Read-only: as root (who writes anywhere) the run is started as nobody, who owns the folder.
        let asRoot = getuid() == 0
        if asRoot { XCTAssertEqual(chown(run.path, 65534, 65534), 0) }
        XCTAssertEqual(chmod(run.path, 0o555), 0)
        let readOnly = runDino(["train", "--recipe", recipe.path, "--output", run.path, "--resume"],
                               launcher: asRoot ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [])
        XCTAssertEqual(chmod(run.path, 0o755), 0)
        if asRoot { XCTAssertEqual(chown(run.path, 0, 0), 0) }
        assertRefused(readOnly, "not writable")
        XCTAssertEqual(try Data(contentsOf: checkpoint), good)

        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--output", run.path, "--resume"]))
        XCTAssertEqual(try logged(run), try logged(straight))
        XCTAssertEqual(try teacher(run), try teacher(straight))
    }

    /// The quick start, shortened: a tiny model for a few steps, then its k-NN and attention report.
    func testQuickstartInShortForm() throws {
        let run = makeTemporaryFolder().appendingPathComponent("quick")
        let overrides = ["embed_dim=16", "depth=1", "num_heads=2", "out_dim=32", "head_hidden_dim=32", "bottleneck_dim=16",
                         "train_subset=256", "batch_size=32", "epochs=1", "local_crops_number=2", "knn_eval_size=100", "knn_train_size=400"]
        let result = runDino(["quickstart", "--output", run.path, "--knn-train-size", "500", "--knn-test-size", "200"]
                             + overrides.flatMap { ["--set", $0] })
        assertSucceeded(result)
        for line in ["== quick start: done", "teacher weighted 20-NN top-1:", "raw-pixel floor:", "attention on the object:"] {
            XCTAssertTrue(result.stdout.contains(line), "missing '\(line)': \(result.stdout)")
        }
        XCTAssertTrue(result.stdout.contains("500 train / 200 test images, each the whole image at 21x21 px (the recipe's eval_resize))"), result.stdout)
        XCTAssertTrue(result.stdout.contains("with the mean patch token:"), result.stdout)
        let attention = files(in: run.appendingPathComponent("attention"))
        XCTAssertEqual(attention.count, 8 * (2 + 3 * 3) + 1, "8 images x (image, sheet, 3 x (2 heads + mean)) and the overview")
        let first = try XCTUnwrap(attention.first { $0.hasSuffix("-image.png") })
        let image = try ImageCodec.decode(contentsOf: run.appendingPathComponent("attention").appendingPathComponent(first), channels: 3)
        XCTAssertEqual([image.width, image.height], [28, 28])
        XCTAssertTrue(result.stdout.contains("attention-overview.png"), result.stdout)
        assertRefused(runDino(["quickstart", "--output", run.path, "--set", "bogus=1"]), "unknown recipe key 'bogus'")
        assertRefused(runDino(["quickstart", "--output", run.path, "--set", "max_minute=3"]),
                      "error: unknown recipe key 'max_minute' (did you mean max_minutes?); Recipes/README.md lists every key")
        assertRefused(runDino(["quickstart", "--output", run.path, "--knn-train-size", "0"]), "--knn-train-size", status: 64)
    }
}
