import DinoData
import DinoKernels
import DinoTraining
import Foundation
import XCTest

/// `dino train --data FOLDER` with no recipe (the recipe chosen from the folder), `--minutes`, and what a
/// collapse does (`on_collapse`), as processes.
final class FolderTrainingTests: XCTestCase {
    /// The first 1,000 Fashion-MNIST training images as PNGs in one folder per class.
    static let fashionFolder: URL = {
        let folder = makeTemporaryFolder("dino-cli-fashion-1k")
        let data = try! FashionMNIST(split: .train)
        for i in 0..<1000 {
            let classFolder = folder.appendingPathComponent(FashionMNIST.classes[data.label(at: i)].replacingOccurrences(of: "/", with: "-"))
            try? FileManager.default.createDirectory(at: classFolder, withIntermediateDirectories: true)
            try! ImageCodec.encodePNG(try! data.image(at: i, channels: 1)).write(to: classFolder.appendingPathComponent(String(format: "%04d.png", i)))
        }
        return folder
    }()

    /// A 2-block, 48-wide ViT instead of the chosen 6 x 96 (the rest of the recipe as chosen), 20 epochs
    /// of the 15 steps 1,000 images give, no time box.
    static let tinyModel = ["--set", "embed_dim=48", "--set", "depth=2", "--set", "num_heads=2", "--set", "max_minutes=0",
                            "--set", "epochs=20", "--set", "knn_every=5", "--threads", "2"]

    static func knnCurve(_ run: URL) throws -> [Double] {
        try String(contentsOf: run.appendingPathComponent("knn.jsonl"), encoding: .utf8).split(separator: "\n").map {
            let object = try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            return (object["knn_top1"] as! NSNumber).doubleValue
        }
    }

    /// The issue's small-folder promise at test scale: 300 steps on 1,000 PNGs lift the teacher's
    /// validation k-NN above its random initialization.
    func testTrainOnAFolderWithoutARecipeLearnsAboveRandomInit() throws {
        let run = makeTemporaryFolder("dino-folder-run")
        let result = runDino(["train", "--data", Self.fashionFolder.path, "--output", run.path] + Self.tinyModel)
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("recipe chosen from the folder"), result.stdout)
        XCTAssertTrue(result.stdout.contains("1000 images in 10 class folders, grayscale, median short side 28 px"), result.stdout)
        let written = try String(contentsOf: run.appendingPathComponent("recipe.yaml"), encoding: .utf8)
        for line in ["_comment: >", "in_chans: 1", "out_dim: 64", "patch_size: 7", "global_crop_size: 21", "dataset: \"folder\"",
                     "data_path: \"\(Self.fashionFolder.path)\"", "embed_dim: 48",
                     // bfloat16 where this CPU has it (1.4x the steps), float32 elsewhere, with no notice either way.
                     "matmul_precision: \"\(GEMM.bfloat16Available ? "bfloat16" : "float32")\""] {
            XCTAssertTrue(written.contains(line), "recipe.yaml lacks \(line):\n\(written)")
        }
        let curve = try Self.knnCurve(run)
        XCTAssertEqual(curve.count, 5, "k-NN at init and after epochs 5, 10, 15, 20: \(curve)")
        XCTAssertGreaterThan(curve.last!, curve[0] + 1, "training did not lift the k-NN above random init: \(curve)")
        XCTAssertFalse(result.stderr.contains("collapse"), result.stderr)
        XCTAssertFalse(result.stdout.contains("no AVX-512 BF16, so the matmuls run in float32"), result.stdout)
        XCTAssertTrue(result.stdout.contains(GEMM.bfloat16Available ? "bfloat16 matmuls (this CPU has AVX-512 BF16" : "float32 matmuls (bfloat16 needs"),
                      result.stdout)

        // --resume with neither --recipe nor --data reads the run's own recipe.yaml.
        let again = runDino(["train", "--output", run.path, "--resume"])
        assertSucceeded(again)
        XCTAssertTrue(again.stdout.contains("resuming with the run's own"), again.stdout)
        XCTAssertTrue(again.stdout.contains("nothing to train"), again.stdout)
        // recipe.yaml lost: the checkpoint's own copy of the recipe is used (and written back).
        try FileManager.default.removeItem(at: run.appendingPathComponent("recipe.yaml"))
        let lost = runDino(["train", "--output", run.path, "--resume"])
        assertSucceeded(lost)
        XCTAssertTrue(lost.stdout.contains("resuming with the recipe saved in \(run.path)/checkpoint.safetensors"), lost.stdout)
        XCTAssertTrue(lost.stdout.contains("nothing to train"), lost.stdout)
        // Neither a recipe nor a folder nor a run to resume: refused, not DINO's ViT-S/16 defaults for weeks.
        let empty = makeTemporaryFolder("dino-no-recipe")
        for arguments in [["train", "--output", empty.appendingPathComponent("run").path],
                          ["train", "--output", empty.appendingPathComponent("run").path, "--resume"],
                          ["train", "--output", empty.appendingPathComponent("run").path, "--init-from", Inputs.grayBackbone.path]] {
            assertRefused(runDino(arguments), "error: give --recipe R (e.g. Recipes/fashion-mnist.yaml: 30 minutes on Fashion-MNIST) or --data FOLDER",
                          status: 64)
        }
        XCTAssertEqual(files(in: empty), [])
    }

    func testFolderRecipeFollowsTheImagesAndMinutes() throws {
        // Color images of 24x20 px in two class folders: RGB, the short side's patch, a batch of 8 for 16 images.
        let run = makeTemporaryFolder("dino-folder-color")
        let result = runDino(["train", "--data", Inputs.labelledFolder.path, "--output", run.path, "--minutes", "0.5",
                              "--set", "max_steps=2", "--set", "depth=1"])
        assertSucceeded(result)
        let written = try String(contentsOf: run.appendingPathComponent("recipe.yaml"), encoding: .utf8)
        for line in ["in_chans: 3", "batch_size: 8", "max_minutes: 0.5", "patch_size: 5", "global_crop_size: 15", "local_crop_size: 10"] {
            XCTAssertTrue(written.contains(line), "recipe.yaml lacks \(line):\n\(written)")
        }
        XCTAssertTrue(result.stdout.contains("16 images in 2 class folders, color, median short side 20 px"), result.stdout)
        XCTAssertTrue(result.stdout.contains("no k-NN check during training: 16 images give 3 validation queries, too few to tell"), result.stdout)
        XCTAssertTrue(written.contains("knn_every: 0"), written)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("knn.jsonl").path))
        // --data and --minutes also apply over a recipe file.
        let recipe = Inputs.file("folder-recipe.yaml", Data("arch: custom\nembed_dim: 16\ndepth: 1\nnum_heads: 2\npatch_size: 4\nglobal_crop_size: 16\nlocal_crop_size: 8\nlocal_crops_number: 2\nout_dim: 32\nhead_hidden_dim: 32\nbottleneck_dim: 16\nbatch_size: 8\nepochs: 1\nwarmup_epochs: 0\n".utf8))
        let other = makeTemporaryFolder("dino-folder-recipe")
        assertSucceeded(runDino(["train", "--recipe", recipe.path, "--data", Inputs.labelledFolder.path, "--minutes", "2",
                                 "--output", other.path]))
        let merged = try String(contentsOf: other.appendingPathComponent("recipe.yaml"), encoding: .utf8)
        XCTAssertTrue(merged.contains("max_minutes: 2.0") && merged.contains("dataset: \"folder\""), merged)
    }

    func testTrainOnABadFolderIsRefused() throws {
        let run = makeTemporaryFolder("dino-folder-bad")
        assertRefused(runDino(["train", "--data", "/nonexistent/photos", "--output", run.path]), "does not exist or is not a folder")
        assertRefused(runDino(["train", "--data", makeTemporaryFolder("dino-empty").path, "--output", run.path]), "no JPEG or PNG images")
        assertRefused(runDino(["train", "--data", Inputs.photo.path, "--output", run.path]), "is not a folder")
        let corrupt = makeTemporaryFolder("dino-corrupt-folder")
        for i in 0..<3 { try Data("not an image".utf8).write(to: corrupt.appendingPathComponent("\(i).png")) }
        assertRefused(runDino(["train", "--data", corrupt.path, "--output", run.path]), "none of the 3 images sampled", "could be read")
        // An iPhone's export: HEIC and WebP files are named with what to do, not just "no JPEG or PNG".
        let phone = makeTemporaryFolder("dino-heic")
        for name in ["IMG_1.HEIC", "IMG_2.heic", "x.webp"] { try Data("not decoded".utf8).write(to: phone.appendingPathComponent(name)) }
        assertRefused(runDino(["train", "--data", phone.path, "--output", run.path]),
                      "no JPEG or PNG images under \(phone.path) (looked recursively for .jpg, .jpeg, .png); 2 .heic, 1 .webp file(s) under \(phone.path) are not read (dino reads JPEG and PNG): convert them")
        let mixed = makeTemporaryFolder("dino-heic-and-png")
        for name in ["IMG_1.HEIC", "IMG_2.heic"] { try Data("not decoded".utf8).write(to: mixed.appendingPathComponent(name)) }
        try FileManager.default.copyItem(at: Inputs.photo, to: mixed.appendingPathComponent("photo.png"))
        let features = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", mixed.path,
                                "--output", mixed.appendingPathComponent("f.npy").path])
        assertSucceeded(features)
        XCTAssertEqual(features.stderrLines.filter { $0.hasPrefix("warning:") },
                       ["warning: 2 .heic file(s) under \(mixed.path) are not read (dino reads JPEG and PNG): convert them, e.g. with ImageMagick's mogrify -format jpg *.heic"])
        // A run folder inside the data folder: its pictures would become training images.
        let inside = Inputs.labelledFolder.appendingPathComponent("runs/first")
        assertRefused(runDino(["train", "--data", Inputs.labelledFolder.path, "--output", inside.path]),
                      "error: --output \(inside.path) lies inside the data folder \(Inputs.labelledFolder.path): the run's pictures would be read as training images", status: 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: inside.deletingLastPathComponent().path))
        let few = makeTemporaryFolder("dino-few-images")
        for name in ["0.png", "2.png", "4.png"] {
            try FileManager.default.copyItem(at: Inputs.labelledFolder.appendingPathComponent("dark/" + name), to: few.appendingPathComponent(name))
        }
        let tooFew = runDino(["train", "--data", few.path, "--output", run.path])
        assertRefused(tooFew, "error: \(few.path) holds 3 images: dino train --data needs at least 8 (one batch)")
        XCTAssertEqual(tooFew.stdout, "", "refused before a recipe is printed")
        assertRefused(runDino(["train", "--data", Inputs.labelledFolder.path, "--output", run.path, "--minutes", "0"]),
                      "--minutes must be a positive number")
        assertRefused(runDino(["train", "--data", Inputs.labelledFolder.path, "--output", run.path, "--minutes", "-2"]),
                      "--minutes must be a positive number")
        assertRefused(runDino(["train", "--data", Inputs.labelledFolder.path, "--output", run.path, "--minutes", "soon"]))
        assertRefused(runDino(["train", "--data", Inputs.labelledFolder.path, "--output", run.path, "--set", "on_collapse=maybe"]),
                      "on_collapse must be warn, stop or restart")
        XCTAssertEqual(files(in: run), [], "a refused run wrote files")
    }

    /// A corrupt file in a folder is left out whenever a batch draws it (every epoch) but reported once,
    /// as it is counted at the end: not one warning and one count per epoch.
    func testAnUnreadableImageIsReportedOnce() throws {
        let folder = makeTemporaryFolder("dino-one-corrupt")
        let source = Inputs.labelledFolder.appendingPathComponent("dark")
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: folder.appendingPathComponent(name))
        }
        try Data("\u{89}PNG\r\n\u{1a}\nnot an image".utf8).write(to: folder.appendingPathComponent("broken.png"))
        let run = makeTemporaryFolder("dino-one-corrupt-run")
        let result = runDino(["train", "--data", folder.path, "--output", run.path, "--set", "max_minutes=0", "--set", "epochs=6",
                              "--set", "embed_dim=48", "--set", "depth=2", "--set", "num_heads=2", "--set", "batch_size=3"])
        assertSucceeded(result)
        let warnings = result.stderrLines.filter { $0.contains("unreadable") }
        XCTAssertEqual(warnings, ["warning: skipped 1 unreadable image(s): broken.png; each is left out whenever it is drawn"], result.stderr)
        XCTAssertTrue(result.stdout.contains("finished 18 steps") && result.stdout.contains(", 1 unreadable image(s) skipped"), result.stdout)
    }

    /// Without centering (`center_momentum=1` keeps the center at 0) the teacher collapses onto one
    /// prototype within a few dozen steps: `stop` ends with the advice, `restart` goes on with half the lr.
    func testCollapseStopsOrRestartsAsTheRecipeSays() throws {
        let collapsing = Self.tinyModel + ["--set", "center_momentum=1", "--set", "warmup_steps=0", "--set", "knn_every=0",
                                           "--set", "epochs=8"]
        let stopped = makeTemporaryFolder("dino-collapse-stop")
        let stop = runDino(["train", "--data", Self.fashionFolder.path, "--output", stopped.path, "--set", "on_collapse=stop"] + collapsing)
        assertRefused(stop, "because the teacher collapsed", "one prototype", "dino train --resume --output")
        XCTAssertTrue(files(in: stopped).contains("checkpoint.safetensors"), "the last checkpoint is kept: \(files(in: stopped))")

        let restarted = makeTemporaryFolder("dino-collapse-restart")
        let restart = runDino(["train", "--data", Self.fashionFolder.path, "--output", restarted.path] + collapsing)
        assertSucceeded(restart)
        XCTAssertTrue(restart.stderr.contains("warning: restarting from"), restart.stderr)
        XCTAssertTrue(restart.stderr.contains("lr 0.016 -> 0.008"), restart.stderr)
        let merged = try String(contentsOf: restarted.appendingPathComponent("recipe.yaml"), encoding: .utf8)
        XCTAssertTrue(merged.contains("lr: 0.008") && merged.contains("warmup_steps: 500"), merged)

        let warned = makeTemporaryFolder("dino-collapse-warn")
        let warn = runDino(["train", "--data", Self.fashionFolder.path, "--output", warned.path, "--set", "on_collapse=warn"] + collapsing)
        assertSucceeded(warn)
        XCTAssertTrue(warn.stderr.contains("warning: collapse"), warn.stderr)
        XCTAssertFalse(warn.stderr.contains("restarting"), warn.stderr)
    }
}
