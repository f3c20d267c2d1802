import DinoEval
import Foundation
import XCTest

/// The paths every command takes, wrong before any work starts: an empty path (which would resolve to
/// the working folder and put a run or pictures there), an output folder that is a file, an output file
/// that is a folder. Each gets one error line and leaves the working folder as it was.
final class PathArgumentTests: XCTestCase {
    func testEmptyPathsAreRefusedEverywhere() {
        let folder = makeTemporaryFolder()
        let rgb = Inputs.rgbBackbone.path, labelled = Inputs.labelledFolder.path, photo = Inputs.photo.path
        let cases: [([String], String)] = [
            (["train", "--data", labelled, "--output", ""], "--output is empty: give a path"),
            (["train", "--recipe", "", "--output", "run"], "--recipe is empty"),
            (["train", "--data", "", "--output", "run"], "--data is empty"),
            (["train", "--data", labelled, "--init-from", "", "--output", "run"], "--init-from is empty"),
            (["quickstart", "--output", ""], "--output is empty"),
            (["features", "--checkpoint", rgb, "--data", labelled, "--output", ""], "--output is empty"),
            (["features", "--checkpoint", "", "--data", labelled, "--output", "f.npy"], "--checkpoint is empty"),
            (["features", "--checkpoint", rgb, "--data", "", "--output", "f.npy"], "--data is empty"),
            (["knn", "--raw-pixels", "--train", "", "--validation"], "--train is empty"),
            (["knn", "--checkpoint", rgb, "--train", labelled, "--test", ""], "--test is empty"),
            (["knn", "--checkpoint", "", "--train", labelled, "--validation"], "--checkpoint is empty"),
            (["linear", "--raw-pixels", "--train", " ", "--test", labelled], "--train is empty"),
            (["attention", "--checkpoint", rgb, "--image", photo, "--output", ""], "--output is empty"),
            (["attention", "--checkpoint", rgb, "--image", "", "--output", "maps"], "--image is empty"),
            (["attention", "--checkpoint", rgb, "--image", photo, "--mask", "", "--output", "maps"], "--mask is empty"),
            (["pca", "--checkpoint", rgb, "--image", photo, "--output", ""], "--output is empty"),
            (["pca", "--checkpoint", "", "--image", photo, "--output", "maps"], "--checkpoint is empty"),
            (["report", ""], "<RUN> is empty"),
            (["init", "--output", ""], "--output is empty"),
            (["convert", rgb, ""], "<OUT> is empty"),
            (["convert", "", "b.safetensors"], "<IN> is empty"),
        ]
        for (arguments, message) in cases {
            assertRefused(runDino(arguments, in: folder, timeout: 60), message, status: 64)
            XCTAssertEqual(files(in: folder), [], "dino \(arguments) wrote into the working folder")
        }
    }

    func testOutputsOfTheWrongKindAreRefused() throws {
        let folder = makeTemporaryFolder()
        let file = folder.appendingPathComponent("taken.txt")
        try Data("keep me".utf8).write(to: file)
        let rgb = Inputs.rgbBackbone.path
        for arguments in [["train", "--data", Inputs.labelledFolder.path, "--output", file.path],
                          ["quickstart", "--output", file.path],
                          ["attention", "--checkpoint", rgb, "--image", Inputs.photo.path, "--output", file.path],
                          ["pca", "--checkpoint", rgb, "--image", Inputs.photo.path, "--output", file.path]] {
            assertRefused(runDino(arguments, timeout: 60), "--output \(file.path) is a file; give a folder", status: 64)
        }
        XCTAssertEqual(try String(contentsOf: file, encoding: .utf8), "keep me")

        let existing = folder.appendingPathComponent("existing")
        try FileManager.default.createDirectory(at: existing, withIntermediateDirectories: true)
        assertRefused(runDino(["init", "--output", existing.path], timeout: 60),
                      "--output \(existing.path) is a folder; give a file name, e.g. \(existing.path)/model.safetensors", status: 64)
        assertRefused(runDino(["convert", rgb, existing.path], timeout: 60), "<OUT> \(existing.path) is a folder", status: 64)
        assertRefused(runDino(["features", "--checkpoint", rgb, "--data", Inputs.labelledFolder.path, "--output", existing.path],
                              timeout: 60), "e.g. \(existing.path)/features.npy", status: 64)
        XCTAssertEqual(files(in: existing), [])
        XCTAssertEqual(files(in: folder), ["existing", "taken.txt"])

        // A path below a file cannot be made: refused before any work, the file kept.
        let below = file.appendingPathComponent("sub").path
        for arguments in [["train", "--data", Inputs.labelledFolder.path, "--output", below],
                          ["attention", "--checkpoint", rgb, "--image", Inputs.photo.path, "--output", below + "/maps"],
                          ["pca", "--checkpoint", rgb, "--image", Inputs.photo.path, "--output", below],
                          ["features", "--checkpoint", rgb, "--data", Inputs.labelledFolder.path, "--output", below + "/f.npy"],
                          ["init", "--output", below + "/m.safetensors"]] {
            let result = runDino(arguments, timeout: 60)
            assertRefused(result, "--output \(below)", "lies under \(file.path), which is a file; give a path in a folder", status: 64)
            XCTAssertEqual(result.stdout, "", "refused before any work: \(arguments[0])")
        }
        assertRefused(runDino(["convert", rgb, below + "/m.safetensors"], timeout: 60), "<OUT> \(below)/m.safetensors lies under", status: 64)
        XCTAssertEqual(try String(contentsOf: file, encoding: .utf8), "keep me")
        XCTAssertEqual(files(in: folder), ["existing", "taken.txt"])
    }

    /// What `dino init` writes, every other command must read: statistics that would give NaN features
    /// or fit another channel count are refused before the file exists.
    func testInitRefusesWhatNoCommandCouldRead() {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("b.safetensors").path
        let custom = ["init", "--arch", "custom", "--embed-dim", "24", "--patch-size", "4", "--img-size", "12"]
        assertRefused(runDino(custom + ["--depth", "0", "--num-heads", "2", "--output", out]), "depth must be at least 1, not 0")
        assertRefused(runDino(custom + ["--depth", "1", "--num-heads", "0", "--output", out]), "num_heads must be at least 1, not 0")
        assertRefused(runDino(["init", "--arch", "vit_tiny", "--std", "0,1,1", "--output", out]),
                      "--std: every std must be a positive number, not [0.0, 1.0, 1.0]")
        assertRefused(runDino(["init", "--arch", "vit_tiny", "--mean", "0.5,0.5", "--std", "1,1", "--output", out]),
                      "--mean and --std need 1 or 3 values each for this 3-channel model, not 2 and 2")
        assertRefused(runDino(custom + ["--depth", "1", "--num-heads", "2", "--in-chans", "1", "--mean", "0.5,0.5", "--output", out]),
                      "--mean and --std need 1 value each for this 1-channel model, not 2 and 1")
        XCTAssertEqual(files(in: folder), [])
        // One value for every channel is what the official transform does with a single number.
        assertSucceeded(runDino(["init", "--arch", "vit_tiny", "--mean", "0.5", "--std", "0.25", "--output", out]))
        assertSucceeded(runDino(["knn", "--checkpoint", out, "--train", Inputs.labelledFolder.path, "--validation", "--k", "3"]))
    }

    /// A validation split too small for a memory bank says so (not "needs labels"), and a k above the
    /// bank says that it votes with all of it.
    func testKNNOnTinySplits() throws {
        let folder = makeTemporaryFolder()
        let features = folder.appendingPathComponent("one.npy")
        try Npy.write([Float](repeating: 1, count: 8), shape: [1, 8], to: features)
        try Npy.write([Int64(0)], shape: [1], to: folder.appendingPathComponent("one.labels.npy"))
        assertRefused(runDino(["knn", "--train", features.path, "--validation"]),
                      "the validation split of 1 image(s) leaves no memory bank")
        let result = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", Inputs.labelledFolder.path,
                              "--validation", "--k", "3,20"])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("validation split: 12 memory / 4 query images"), result.stdout)
        XCTAssertTrue(result.stdout.contains("(a k above the 12 memory images votes with all of them)"), result.stdout)
        XCTAssertTrue(result.stdout.contains("(2 images)"), result.stdout)
        // A k given twice is evaluated once; a k past 32 bits is printed as given.
        let repeated = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", Inputs.labelledFolder.path,
                                "--validation", "--k", "3,100000000000,3"])
        assertSucceeded(repeated)
        let rows = repeated.stdout.split(separator: "\n").filter { $0.hasSuffix("%") && !$0.contains("(") }
        XCTAssertEqual(rows.map { $0.split(separator: " ").first.map(String.init) ?? "" }, ["3", "100000000000"], repeated.stdout)
    }
}
