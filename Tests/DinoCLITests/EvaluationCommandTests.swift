import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import XCTest

/// `dino init`, `features`, `knn` and `linear` run as a user runs them (attention and pca:
/// `PictureCommandTests`): the good paths check what was written, the bad inputs a one-line error, a
/// non-zero exit and no output file.
final class EvaluationCommandTests: XCTestCase {
    // MARK: init

    func testInitWritesALoadableBackbone() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("b.safetensors").path
        let result = runDino(["init", "--arch", "custom", "--embed-dim", "24", "--depth", "1", "--num-heads", "2",
                              "--patch-size", "4", "--img-size", "12", "--in-chans", "1", "--output", out])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("custom 24-wide, depth 1"))
        let loaded = try BackboneCheckpoint.load(from: URL(fileURLWithPath: out))
        XCTAssertEqual(loaded.config.embedDim, 24)
        XCTAssertEqual(loaded.config.inChannels, 1)
        XCTAssertEqual(loaded.mean, FashionMNIST.mean)
    }

    func testInitRefusesBadArchitectures() {
        let out = makeTemporaryFolder().appendingPathComponent("b.safetensors")
        assertRefused(runDino(["init", "--arch", "vit_huge", "--output", out.path]), "unknown arch 'vit_huge'", status: 64)
        assertRefused(runDino(["init", "--in-chans", "2", "--output", out.path]), "in_chans must be 1 or 3", status: 64)
        assertRefused(runDino(["init", "--patch-size", "0", "--output", out.path]), "patch_size 0", status: 64)
        assertRefused(runDino(["init", "--arch", "custom", "--embed-dim", "30", "--depth", "1", "--num-heads", "4",
                               "--output", out.path]), "multiple of num_heads", status: 64)
        assertRefused(runDino(["init", "--arch", "custom", "--embed-dim", "1000000", "--depth", "1", "--num-heads", "1",
                               "--output", out.path]), "out of range", status: 64)
        assertRefused(runDino(["init", "--mean", "a,b", "--output", out.path]), "--mean", status: 64)
        assertRefused(runDino(["init", "--in-chans", "1", "--mean", "0.5,0.5", "--output", out.path]), "--mean", status: 64)
        assertRefused(runDino(["init", "--seed", "-1", "--output", out.path]), "--seed", status: 64)
        assertRefused(runDino(["init"]), "--output", status: 64)
        let shifted = makeTemporaryFolder().appendingPathComponent("shifted.safetensors")
        assertSucceeded(runDino(["init", "--arch", "custom", "--embed-dim", "24", "--depth", "1", "--num-heads", "2",
                                 "--patch-size", "4", "--img-size", "12", "--shifted-patches", "--output", shifted.path]))
        XCTAssertTrue((try? BackboneCheckpoint.load(from: shifted))?.config.shiftedPatches ?? false, "--shifted-patches is in the file")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        assertRefused(runDino(["init", "--arch", "vit_tiny", "--patch-size", "16", "--output", "/proc/no/b.safetensors"]), "/proc/no")
    }

    // MARK: features

    func testFeaturesWriteTheStatedArrays() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("f.npy")
        let result = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                              "--output", out.path, "--patch-tokens", "--batch-size", "5"])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("16 x 32 features"), result.stdout)
        XCTAssertTrue(result.stdout.contains("wrote \(folder.path)/f.patches.npy: 16 x 16 x 32 patch tokens"), result.stdout)
        XCTAssertEqual(try Npy.read(out).shape, [16, 32])
        // The files beside the features, given to knn in their place, are named as what they are.
        for (suffix, what) in [("patches", "the patch tokens"), ("labels", "the labels")] {
            assertRefused(runDino(["knn", "--train", folder.appendingPathComponent("f.\(suffix).npy").path, "--validation"]),
                          "error: \(folder.path)/f.\(suffix).npy holds \(what) written beside the features \(out.path): give that file")
        }
        XCTAssertEqual(try Npy.read(folder.appendingPathComponent("f.labels.npy")).values, (0..<16).map { Float($0 / 8) })
        // 20x24 images, short side resized to 16 x 256/224 = 18, center crop 16: 4x4 patches.
        XCTAssertEqual(try Npy.read(folder.appendingPathComponent("f.patches.npy")).shape, [16, 16, 32])
        let names = try String(contentsOf: folder.appendingPathComponent("f.txt"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(names.first, "dark/0.png")
        XCTAssertEqual(names.count, 16)

        // A gray model reads the RGB images (converted to luma), with the average-pooled patch tokens.
        let gray = folder.appendingPathComponent("g.npy")
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.grayBackbone.path, "--data", Inputs.labelledFolder.path,
                                 "--output", gray.path, "--avgpool", "--n-last-blocks", "2"]))
        XCTAssertEqual(try Npy.read(gray).shape, [16, 96])
        // --limit: the first N images, as knn and linear take them.
        let first = folder.appendingPathComponent("first.npy")
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                                 "--output", first.path, "--limit", "5"]))
        XCTAssertEqual(try Npy.read(first).shape, [5, 32])
        assertRefused(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                               "--output", first.path, "--limit", "0"]), "--limit must be at least 1", status: 64)

        // An output without .npy gets it (as numpy.save), so that knn reads the file as features.
        let bare = folder.appendingPathComponent("bare")
        let written = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path, "--output", bare.path])
        assertSucceeded(written)
        XCTAssertTrue(written.stdout.contains("wrote \(bare.path).npy: 16 x 32 features"), written.stdout)
        XCTAssertTrue(files(in: folder).contains("bare.npy") && files(in: folder).contains("bare.labels.npy") && !files(in: folder).contains("bare"))
        assertSucceeded(runDino(["knn", "--train", bare.path + ".npy", "--test", bare.path + ".npy"]))
    }

    /// Folders linked into place are followed, as torchvision's ImageFolder does: a data folder that is a
    /// symbolic link, class folders that are links (each a class, by its link name), and a link back up
    /// (visited once, not forever); hidden files and folders are left out.
    func testLinkedFoldersAreFollowed() throws {
        let folder = makeTemporaryFolder()
        let data = folder.appendingPathComponent("data"), manager = FileManager.default
        try manager.createDirectory(at: data, withIntermediateDirectories: true)
        for name in ["dark", "light"] {
            try manager.createSymbolicLink(at: data.appendingPathComponent(name), withDestinationURL: Inputs.labelledFolder.appendingPathComponent(name))
        }
        try manager.createSymbolicLink(at: data.appendingPathComponent("loop"), withDestinationURL: data)
        try manager.createDirectory(at: data.appendingPathComponent(".thumbnails/x"), withIntermediateDirectories: true)
        try manager.copyItem(at: Inputs.photo, to: data.appendingPathComponent(".thumbnails/x/p.png"))
        let linked = folder.appendingPathComponent("linked")
        try manager.createSymbolicLink(at: linked, withDestinationURL: data)
        let out = folder.appendingPathComponent("f.npy")
        let result = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", linked.path, "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("16 x 32 features"), result.stdout)
        XCTAssertEqual(try String(contentsOf: folder.appendingPathComponent("f.classes.txt"), encoding: .utf8), "dark\nlight\n")
    }

    func testFeaturesOfImagesSmallerThanAPatch() throws {
        let folder = makeTemporaryFolder()
        let images = folder.appendingPathComponent("tiny")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        for (i, side) in [1, 2, 3].enumerated() {
            try ImageCodec.encodePNG(Image(width: side, height: side, channels: 3, pixels: .init(repeating: UInt8(40 * i), count: 3 * side * side)))
                .write(to: images.appendingPathComponent("\(i).png"))
        }
        let out = folder.appendingPathComponent("f.npy")
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", images.path, "--output", out.path]))
        XCTAssertEqual(try Npy.read(out).shape, [3, 32])
        let attention = folder.appendingPathComponent("attention")
        assertSucceeded(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", images.appendingPathComponent("1.png").path,
                                 "--output", attention.path]))
        XCTAssertEqual(try ImageCodec.decode(contentsOf: attention.appendingPathComponent("1-image.png"), channels: 3).width, 4)
    }

    func testFeaturesRefuseBadCheckpoints() {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("f.npy")
        func features(_ checkpoint: String) -> ProcessResult {
            runDino(["features", "--checkpoint", checkpoint, "--data", Inputs.labelledFolder.path, "--output", out.path])
        }
        assertRefused(features(folder.appendingPathComponent("missing.safetensors").path), "missing.safetensors", "does not exist")
        assertRefused(features(folder.path), "is a folder")
        assertRefused(features(Inputs.file("empty.safetensors", Data()).path), "empty.safetensors", "only 0 bytes")
        assertRefused(features(Inputs.truncated(Inputs.rgbBackbone, as: "half.safetensors").path), "half.safetensors")
        assertRefused(features(Inputs.file("text.safetensors", Data("hello, this is not a checkpoint".utf8)).path), "text.safetensors")
        var huge = Data(); withUnsafeBytes(of: UInt64.max.littleEndian) { huge.append(contentsOf: $0) }; huge.append(Data("{}".utf8))
        assertRefused(features(Inputs.file("huge-header.safetensors", huge).path), "huge-header.safetensors", "header declares")
        let hostileShape = #"{"pos_embed":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#
        var hostile = Data(); withUnsafeBytes(of: UInt64(hostileShape.utf8.count).littleEndian) { hostile.append(contentsOf: $0) }
        hostile.append(Data(hostileShape.utf8))
        assertRefused(features(Inputs.file("hostile.safetensors", hostile).path), "hostile.safetensors", "does not fit")
        // A metadata architecture far bigger than the tensors: refused before allocating it.
        let big = try! SafeTensors.read(Inputs.rgbBackbone)
        var metadata = big.metadata
        metadata["dino.config"] = #"{"arch":"custom","img_size":224,"patch_size":16,"in_chans":3,"embed_dim":8192,"depth":128,"num_heads":64,"mlp_ratio":4}"#
        let liar = folder.appendingPathComponent("liar.safetensors")
        try! SafeTensors.write(big.tensors, metadata: metadata, to: liar)
        assertRefused(features(liar.path), "liar.safetensors", "parameters are needed")
        // Another architecture's tensors under this metadata.
        let wrong = folder.appendingPathComponent("wrong.safetensors")
        metadata["dino.config"] = #"{"arch":"custom","img_size":16,"patch_size":4,"in_chans":3,"embed_dim":16,"depth":2,"num_heads":4,"mlp_ratio":4}"#
        try! SafeTensors.write(big.tensors, metadata: metadata, to: wrong)
        assertRefused(features(wrong.path), "wrong.safetensors", "does not match the architecture")
        // Other formats given as a checkpoint.
        assertRefused(features(Inputs.photo.path), "error: \(Inputs.photo.path) is a PNG image, not a checkpoint")
        assertRefused(features(Inputs.file("old.pth", Data([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20])).path),
                      "old.pth is a PyTorch file in the legacy (pre-1.6) format, which dino does not read: re-save it")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "a failed run left \(out.path)")
    }

    func testFeaturesRefuseBadDataAndOptions() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("f.npy")
        func features(_ data: String, _ extra: [String] = []) -> ProcessResult {
            runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", data, "--output", out.path] + extra)
        }
        let empty = folder.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        assertRefused(features(empty.path), "no JPEG or PNG images under")
        assertRefused(features(folder.appendingPathComponent("nowhere").path), "does not exist")
        assertRefused(features("fashion-mnist:bogus"), "fashion-mnist:train or fashion-mnist:test")

        // A folder with one bad image of each kind: fail names it; skip counts them.
        let bad = folder.appendingPathComponent("bad")
        try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
        try Inputs.bytes(of: Inputs.photo).write(to: bad.appendingPathComponent("a-good.png"))
        try Data().write(to: bad.appendingPathComponent("b-empty.png"))
        try Inputs.bytes(of: Inputs.photo).prefix(60).write(to: bad.appendingPathComponent("c-truncated.png"))
        try Data([0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5]).write(to: bad.appendingPathComponent("d-corrupt.jpg"))
        try Inputs.bytes(of: Inputs.pngHeader(width: 100_000, height: 100_000, name: "huge.png")).write(to: bad.appendingPathComponent("e-huge.png"))
        assertRefused(features(bad.path), "b-empty.png", "--on-bad-image skip")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        let skipped = features(bad.path, ["--on-bad-image", "skip"])
        assertSucceeded(skipped)
        XCTAssertTrue(skipped.stdout.contains("skipped 4 unreadable image(s)"), skipped.stdout)
        XCTAssertEqual(try Npy.read(out).shape, [1, 32])
        try FileManager.default.removeItem(at: out)

        assertRefused(features(Inputs.labelledFolder.path, ["--batch-size", "0"]), "--batch-size", status: 64)
        assertRefused(features(Inputs.labelledFolder.path, ["--on-bad-image", "ignore"]), "--on-bad-image", status: 64)
        assertRefused(features(Inputs.labelledFolder.path, ["--n-last-blocks", "3"]), "last blocks must be 1...2")
        assertRefused(features(Inputs.labelledFolder.path, ["--input-size", "2"]), "below the patch size")
        assertRefused(features(Inputs.labelledFolder.path, ["--resize", "0"]), "--resize", status: 64)
        assertRefused(features(Inputs.labelledFolder.path, ["--batch-size", "65536", "--input-size", "4096"]), "GiB of activations")
        assertRefused(features(Inputs.labelledFolder.path, ["--threads", "0"]), "--threads", status: 64)
        assertRefused(features(Inputs.labelledFolder.path, ["--mean", "0.5,0.5"]), "--mean and --std need 1 or 3 values each for this 3-channel model, not 2 and 3")
        assertRefused(features(Inputs.labelledFolder.path, ["--mean", "0.5", "--std", "0"]), "--std: every std must be a positive number")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        // IDX data: a gzip that is truncated, and one that holds no IDX.
        let idx = folder.appendingPathComponent("idx")
        try FileManager.default.createDirectory(at: idx, withIntermediateDirectories: true)
        try Data([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2]).write(to: idx.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        assertRefused(features("fashion-mnist:test@\(idx.path)"), "t10k-images-idx3-ubyte.gz", "gzip")
        try Data([0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0, 0, 28, 0, 0, 0, 28]).write(to: idx.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        assertRefused(features("fashion-mnist:test@\(idx.path)"), "is truncated")
        try Data("not idx".utf8).write(to: idx.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        assertRefused(features("fashion-mnist:test@\(idx.path)"), "not an IDX file")
        assertRefused(features("fashion-mnist:test@\(folder.path)"), "apt-get install dataset-fashion-mnist")
    }

    // MARK: knn and linear

    /// Features of the labelled folder as `.npy` (with labels beside them), made by `dino features`.
    func labelledFeatures(in folder: URL) -> URL {
        let out = folder.appendingPathComponent("train.npy")
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                                 "--output", out.path]))
        return out
    }

    func testKNNOnFoldersAndCachedFeatures() throws {
        let folder = makeTemporaryFolder()
        let result = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", Inputs.labelledFolder.path,
                              "--test", Inputs.labelledFolder.path, "--k", "1,3", "--json"])
        assertSucceeded(result)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["train_images"] as? Int, 16)
        let results = try XCTUnwrap(json["results"] as? [[String: Any]])
        XCTAssertEqual(results.map { $0["k"] as? Int }, [1, 3])
        XCTAssertEqual(results[0]["top1"] as? Double, 100, "each image is its own nearest neighbour")
        XCTAssertEqual(json["classes"] as? [String], ["dark", "light"])
        // One folder for both: its features computed once, and a warning that the score is not held out.
        XCTAssertTrue(result.stderr.contains("warning: --test is the --train data") && result.stderr.contains("--validation"), result.stderr)
        XCTAssertFalse(result.stderr.contains("test features"), result.stderr)

        let cached = labelledFeatures(in: folder)
        let table = runDino(["knn", "--train", cached.path, "--test", cached.path, "--k", "1"])
        assertSucceeded(table)
        XCTAssertTrue(table.stdout.contains("    1  100.00%"), table.stdout)
        assertSucceeded(runDino(["knn", "--train", cached.path, "--validation", "--k", "3"]))
        let warmer = runDino(["knn", "--train", cached.path, "--validation", "--k", "3", "--temperature", "0.5", "--json"])
        assertSucceeded(warmer)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(warmer.stdout.utf8)) as? [String: Any])?["temperature"] as? Double, 0.5)
        let warmerTable = runDino(["knn", "--train", cached.path, "--validation", "--k", "3", "--temperature", "0.5"])
        XCTAssertTrue(warmerTable.stdout.contains("weighted k-NN (T = 0.5)"), warmerTable.stdout)
        let pixels = runDino(["knn", "--raw-pixels", "--train", Inputs.labelledFolder.path, "--validation", "--k", "1", "--json"])
        assertSucceeded(pixels)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(pixels.stdout.utf8)) as? [String: Any])?["dimension"] as? Int, 32 * 32)
    }

    func testKNNRefusesBadFeatureFiles() throws {
        let folder = makeTemporaryFolder()
        let good = labelledFeatures(in: folder)
        func knn(_ train: String, _ extra: [String] = ["--test", good.path]) -> ProcessResult {
            runDino(["knn", "--train", train] + extra)
        }
        assertRefused(knn(folder.appendingPathComponent("missing.npy").path), "missing.npy", "does not exist")
        assertRefused(knn(Inputs.file("empty.npy", Data()).path), "empty.npy", "no NUMPY magic")
        assertRefused(knn(Inputs.truncated(good, as: "half.npy").path), "half.npy", "does not fit")
        let header = Npy.header(descr: "<f4", shape: [1 << 40, 1 << 30])
        assertRefused(knn(Inputs.file("huge.npy", header).path), "huge.npy", "does not fit")
        assertRefused(knn(Inputs.file("bytes.npy", Npy.header(descr: "|u1", shape: [2, 2]) + Data([1, 2, 3, 4])).path), "bytes.npy", "float32")
        var version = Npy.header(descr: "<f4", shape: [1, 1]) + Data(count: 4); version[6] = 9
        assertRefused(knn(Inputs.file("version.npy", version).path), "version.npy", "version 9")
        var long = Npy.header(descr: "<f4", shape: [1, 1]) + Data(count: 4); long[8] = 0xFF; long[9] = 0xFF
        assertRefused(knn(Inputs.file("long.npy", long).path), "long.npy", "past the end")
        // Features without labels, labels that do not fit, other widths.
        let unlabelled = folder.appendingPathComponent("unlabelled.npy")
        try Npy.write([Float](repeating: 1, count: 32 * 16), shape: [16, 32], to: unlabelled)
        assertRefused(knn(unlabelled.path), "k-NN needs label")
        let mislabelled = folder.appendingPathComponent("mislabelled.npy")
        try Npy.write([Float](repeating: 1, count: 32 * 16), shape: [16, 32], to: mislabelled)
        try Npy.write([Int64](repeating: 1 << 50, count: 16), shape: [16], to: folder.appendingPathComponent("mislabelled.labels.npy"))
        assertRefused(knn(mislabelled.path), "mislabelled.labels.npy", "integer class labels")
        let narrow = folder.appendingPathComponent("narrow.npy")
        try Npy.write([Float](repeating: 1, count: 8 * 16), shape: [16, 8], to: narrow)
        try Npy.write((0..<16).map { Int64($0 % 2) }, shape: [16], to: folder.appendingPathComponent("narrow.labels.npy"))
        assertRefused(knn(narrow.path), "8-dimensional")
        let nan = folder.appendingPathComponent("nan.npy")
        try Npy.write([Float](repeating: .nan, count: 32 * 16), shape: [16, 32], to: nan)
        assertRefused(knn(nan.path), "NaN")
        // Options.
        assertRefused(knn(good.path, ["--test", good.path, "--k", "0"]), "--k", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--temperature", "-1"]), "--temperature must be a positive number", status: 64)
        // A negative number reaches the option's own check, not the parser's "Missing value".
        assertRefused(knn(good.path, ["--test", good.path, "--k", "-3"]), "--k takes comma-separated positive integers", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--limit", "-5"]), "--limit must be at least 1", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--threads", "-2"]), "--threads must be 1...1024", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--temperature", "-.5"]), "--temperature must be a positive number", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--json", "-3"]), "--json", status: 64)
        assertRefused(knn(good.path, ["--test", good.path, "--validation"]), "not both")
        assertRefused(knn(good.path, []), "give --test")
        assertRefused(knn(good.path, ["--test", good.path, "--avgpool"]), "--avgpool")
        assertRefused(knn(Inputs.labelledFolder.path, ["--test", good.path]), "error: \(Inputs.labelledFolder.path) is images: give --checkpoint")
        assertRefused(knn(good.path, ["--test", good.path, "--limit", "0"]), "--limit", status: 64)
    }

    func testLinearProbe() throws {
        let folder = makeTemporaryFolder()
        let good = labelledFeatures(in: folder)
        let result = runDino(["linear", "--train", good.path, "--test", good.path, "--epochs", "5", "--probe-batch-size", "4"])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("linear probe on 32-d features"), result.stdout)
        assertRefused(runDino(["linear", "--train", good.path, "--test", good.path, "--epochs", "0"]), "--epochs", status: 64)
        assertRefused(runDino(["linear", "--train", good.path, "--test", good.path, "--lr", "nan"]), "--lr", status: 64)
        assertRefused(runDino(["linear", "--train", good.path, "--test", Inputs.file("bad.npy", Data("x".utf8)).path]), "bad.npy")
        assertRefused(runDino(["linear", "--train", good.path]), "--test", status: 64)
        let decayed = runDino(["linear", "--train", good.path, "--test", good.path, "--epochs", "5", "--weight-decay", "0.01"])
        assertSucceeded(decayed)
        XCTAssertTrue(decayed.stdout.contains("epoch 5/5"), decayed.stdout)
        XCTAssertTrue(decayed.stderr.contains("warning: --test is the --train data") && decayed.stderr.contains("a test set the probe does not train on"),
                      decayed.stderr)
        assertRefused(runDino(["linear", "--train", good.path, "--test", good.path, "--weight-decay", "-1"]), "--weight-decay", status: 64)
    }

    /// Classes are matched by folder name, not by position: a test folder holding only `light` is scored
    /// against the training folder's `light` (index 1 there, index 0 in its own sorted list), a test class
    /// the training data lacks is refused, and the linear probe refuses data without 2 labelled classes.
    func testTestClassesAreMatchedByName() throws {
        let folder = makeTemporaryFolder()
        let light = folder.appendingPathComponent("test/light")
        try FileManager.default.createDirectory(at: light.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Inputs.labelledFolder.appendingPathComponent("light"), to: light)
        let knn = runDino(["knn", "--raw-pixels", "--train", Inputs.labelledFolder.path, "--test", light.deletingLastPathComponent().path,
                           "--k", "3", "--json"])
        assertSucceeded(knn)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(knn.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["classes"] as? [String], ["dark", "light"], knn.stdout)
        XCTAssertEqual((json["results"] as? [[String: Any]])?.first?["top1"] as? Double, 100, "light against light: \(knn.stdout)")
        let linear = runDino(["linear", "--raw-pixels", "--train", Inputs.labelledFolder.path, "--test", light.deletingLastPathComponent().path,
                              "--epochs", "5"])
        assertSucceeded(linear)
        XCTAssertTrue(linear.stdout.contains("test top-1 100.00%"), linear.stdout)
        // Cached features carry their class names (`.classes.txt`), so the same holds for them: each test
        // image is a copy of a training image, its own nearest neighbour.
        let trainFeatures = folder.appendingPathComponent("train.npy"), testFeatures = folder.appendingPathComponent("light.npy")
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.grayBackbone.path, "--data", Inputs.labelledFolder.path,
                                 "--output", trainFeatures.path]))
        assertSucceeded(runDino(["features", "--checkpoint", Inputs.grayBackbone.path, "--data", light.deletingLastPathComponent().path,
                                 "--output", testFeatures.path]))
        let classesFile = folder.appendingPathComponent("light.classes.txt")
        XCTAssertEqual(try String(contentsOf: classesFile, encoding: .utf8), "light\n")
        let cached = runDino(["knn", "--train", trainFeatures.path, "--test", testFeatures.path, "--k", "1", "--json"])
        assertSucceeded(cached)
        let cachedJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(cached.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((cachedJSON["results"] as? [[String: Any]])?.first?["top1"] as? Double, 100, cached.stdout)
        try Data("light\nlight\n".utf8).write(to: classesFile)
        assertRefused(runDino(["knn", "--train", trainFeatures.path, "--test", testFeatures.path]),
                      "light.classes.txt must name each class of light.labels.npy once")

        try FileManager.default.copyItem(at: light, to: folder.appendingPathComponent("test/medium"))
        assertRefused(runDino(["knn", "--raw-pixels", "--train", Inputs.labelledFolder.path, "--test", light.deletingLastPathComponent().path]),
                      "error: the test data's class 'medium' has no training images (training classes: dark, light): give test class folders named as the training ones",
                      status: 1)
        assertRefused(runDino(["linear", "--raw-pixels", "--train", light.deletingLastPathComponent().path, "--test", Inputs.labelledFolder.path]),
                      "the test data's class 'dark' has no training images (training classes: light, medium)")
        let single = folder.appendingPathComponent("single")
        try FileManager.default.createDirectory(at: single, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: light, to: single.appendingPathComponent("light"))
        assertRefused(runDino(["linear", "--raw-pixels", "--train", single.path, "--test", single.path]),
                      "error: the linear probe needs at least 2 classes in the training data (found 1: light)")
        assertRefused(runDino(["linear", "--raw-pixels", "--train", light.path, "--test", light.path]),
                      "error: \(light.path) has no class subfolders, and the linear probe needs labels: give a folder with one subfolder per class")
        // Refused before any features are computed (no progress line), for --test and --validation alike.
        for queries in [["--test", light.path], ["--validation"]] {
            let refused = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", light.path] + queries)
            assertRefused(refused, "error: \(light.path) has no class subfolders, and k-NN needs labels")
            XCTAssertFalse(refused.stderr.contains("features"), refused.stderr)
        }
        // One image beside the class subfolders: named, not "no class subfolders".
        let mixed = folder.appendingPathComponent("mixed")
        try FileManager.default.copyItem(at: Inputs.labelledFolder, to: mixed)
        try FileManager.default.copyItem(at: Inputs.photo, to: mixed.appendingPathComponent("stray.png"))
        assertRefused(runDino(["knn", "--raw-pixels", "--train", mixed.path, "--validation"]),
                      "error: \(mixed.path) has 1 image(s) directly inside it (e.g. stray.png) beside its class subfolders, and k-NN needs a class for every image")
        let unlabelledTest = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", Inputs.labelledFolder.path, "--test", light.path])
        assertRefused(unlabelledTest, "error: \(light.path) has no class subfolders, and k-NN needs labels")
        XCTAssertFalse(unlabelledTest.stderr.contains("features"), "refused before the training features: \(unlabelledTest.stderr)")
    }

    /// `--normalize-pixels`: a folder's raw pixels standardized by the training folder's own statistics
    /// (subtracting the mean changes the cosine neighbours), and only with `--raw-pixels`.
    func testRawPixelsNormalizedByTheTrainingData() throws {
        let folder = Inputs.labelledFolder.path
        func top1(_ extra: [String]) throws -> Double {
            let result = runDino(["knn", "--raw-pixels", "--train", folder, "--validation", "--k", "3", "--json"] + extra)
            assertSucceeded(result)
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            return try XCTUnwrap((json["results"] as? [[String: Any]])?.first?["top1"] as? Double)
        }
        XCTAssertEqual(try top1(["--normalize-pixels"]), 100, "dark and light images on either side of the folder's mean")
        XCTAssertLessThan(try top1([]), 100, "all-positive pixels: cosine similarity tells the classes apart less well")
        let linear = runDino(["linear", "--raw-pixels", "--normalize-pixels", "--train", folder, "--test", folder, "--epochs", "3"])
        assertSucceeded(linear)
        XCTAssertTrue(linear.stdout.contains("linear probe on 1024-d features"), linear.stdout)
        assertRefused(runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--normalize-pixels", "--train", folder, "--validation"]),
                      "--normalize-pixels goes with --raw-pixels", status: 64)
        for option in [["--resize", "32"], ["--input-size", "28"]] {
            assertRefused(runDino(["linear", "--raw-pixels", "--train", folder, "--test", folder] + option),
                          "--resize and --input-size go with --checkpoint", status: 64)
        }
    }

    // MARK: --matmul-precision

    /// bfloat16 matmuls give the features to within bfloat16's rounding (each operand within 2⁻⁸ of
    /// itself, relative: on the unit-variance outputs of the final LayerNorm that is hundredths), or on a
    /// CPU without AVX-512 BF16 float32's exactly, with a note; every backbone command takes the option.
    func testMatmulPrecisionOption() throws {
        let folder = makeTemporaryFolder()
        func features(_ precision: String) throws -> (result: ProcessResult, values: [Float]) {
            let out = folder.appendingPathComponent("\(precision).npy")
            let result = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                                  "--output", out.path, "--matmul-precision", precision])
            assertSucceeded(result)
            return (result, try Npy.read(out).values)
        }
        let exact = try features("float32"), rounded = try features("bfloat16")
        XCTAssertEqual(exact.values.count, 16 * 32)
        XCTAssertEqual(rounded.values.count, exact.values.count)
        if GEMM.bfloat16Available {
            XCTAssertNotEqual(rounded.values, exact.values, "bfloat16 was asked for and float32 ran")
            let largest = zip(exact.values, rounded.values).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(largest, 0.05)
            XCTAssertFalse(rounded.result.stderr.contains("no AVX-512 BF16"), rounded.result.stderr)
        } else {
            XCTAssertEqual(rounded.values, exact.values)
            XCTAssertTrue(rounded.result.stderr.contains("no AVX-512 BF16, so the matmuls run in float32"), rounded.result.stderr)
        }
        let knn = runDino(["knn", "--checkpoint", Inputs.rgbBackbone.path, "--train", Inputs.labelledFolder.path,
                           "--test", Inputs.labelledFolder.path, "--k", "1", "--matmul-precision", "bfloat16"])
        assertSucceeded(knn)
        XCTAssertTrue(knn.stdout.contains("    1  100.00%"), knn.stdout)
        let maps = folder.appendingPathComponent("maps"), pca = folder.appendingPathComponent("pca")
        assertSucceeded(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                                 "--output", maps.path, "--matmul-precision", "bfloat16"]))
        XCTAssertTrue(files(in: maps).contains("photo-sheet.png"))
        assertSucceeded(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                                 "--output", pca.path, "--matmul-precision", "bfloat16"]))
        XCTAssertEqual(files(in: pca), ["photo-pca-sheet.png", "photo-pca.png"])
        let refused = folder.appendingPathComponent("refused.npy")
        for command in [["features", "--data", Inputs.labelledFolder.path, "--output", refused.path],
                        ["knn", "--train", Inputs.labelledFolder.path, "--validation"],
                        ["linear", "--train", Inputs.labelledFolder.path, "--test", Inputs.labelledFolder.path],
                        ["attention", "--image", Inputs.photo.path, "--output", maps.path],
                        ["pca", "--image", Inputs.photo.path, "--output", pca.path]] {
            assertRefused(runDino(command + ["--checkpoint", Inputs.rgbBackbone.path, "--matmul-precision", "float16"]),
                          "--matmul-precision takes float32 or bfloat16, not 'float16'", status: 64)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused.path))
    }

    // MARK: PyTorch checkpoints

    func testOfficialPyTorchCheckpointsInEveryCommand() throws {
        let torch = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Goldens/torch")
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("f.npy")
        let features = runDino(["features", "--checkpoint", torch.appendingPathComponent("backbone.pth").path,
                                "--data", Inputs.labelledFolder.path, "--output", out.path])
        assertSucceeded(features)
        XCTAssertTrue(features.stderr.contains("as a backbone state dict in the official DINO / DINOv2 layout"), features.stderr)
        XCTAssertEqual(try Npy.read(out).shape, [16, 64])
        let knn = runDino(["knn", "--checkpoint", torch.appendingPathComponent("training.pth").path, "--train", Inputs.labelledFolder.path,
                           "--validation", "--k", "3", "--json"])
        assertSucceeded(knn)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(knn.stdout.utf8)) as? [String: Any], knn.stdout)
        XCTAssertTrue(knn.stderr.contains("an official DINO training checkpoint (its teacher)"), knn.stderr)
        assertSucceeded(runDino(["attention", "--checkpoint", torch.appendingPathComponent("backbone-bf16.pth").path,
                                 "--image", Inputs.photo.path, "--output", folder.appendingPathComponent("a").path]))
        assertSucceeded(runDino(["pca", "--checkpoint", torch.appendingPathComponent("backbone-fp16.pth").path,
                                 "--image", Inputs.photo.path, "--output", folder.appendingPathComponent("p").path]))
        // A Hugging Face model folder as downloaded (config.json and model.safetensors).
        let hf = torch.deletingLastPathComponent().appendingPathComponent("huggingface/vit")
        let hfFeatures = runDino(["features", "--checkpoint", hf.path, "--data", Inputs.labelledFolder.path, "--output", out.path])
        assertSucceeded(hfFeatures)
        XCTAssertTrue(hfFeatures.stderr.contains("as a Hugging Face transformers ViT"), hfFeatures.stderr)
        assertRefused(runDino(["features", "--checkpoint", torch.path, "--data", Inputs.labelledFolder.path, "--output", out.path]),
                      "without model.safetensors or pytorch_model.bin")
        // convert: the same backbone as this project's safetensors, with its metadata.
        let converted = folder.appendingPathComponent("converted.safetensors")
        let convert = runDino(["convert", torch.appendingPathComponent("training.pth").path, converted.path])
        assertSucceeded(convert)
        XCTAssertTrue(convert.stdout.contains("64-wide, depth 1, 1 heads, patch 4"), convert.stdout)
        let original = try BackboneCheckpoint.load(from: torch.appendingPathComponent("backbone.pth"))
        let reloaded = try BackboneCheckpoint.load(from: converted)
        XCTAssertEqual(reloaded.parameters.array, original.parameters.array)
        XCTAssertEqual(reloaded.config, original.config)
        assertRefused(runDino(["convert", torch.appendingPathComponent("refused-system.pth").path, converted.path]), "'posix.system'")
        assertRefused(runDino(["convert", torch.appendingPathComponent("backbone.pth").path]), "OUT", status: 64)
        for (file, fragment) in [("refused-system.pth", "'posix.system'"), ("refused-storage.pth", "EvilStorage"),
                                 ("refused-size.pth", "does not fit its storage"), ("refused-truncated.pth", "not a readable zip archive"),
                                 ("small.pth", "unknown checkpoint layout")] {
            let bad = folder.appendingPathComponent("bad.npy")
            assertRefused(runDino(["features", "--checkpoint", torch.appendingPathComponent(file).path, "--data", Inputs.labelledFolder.path,
                                   "--output", bad.path]), file, fragment)
            XCTAssertFalse(FileManager.default.fileExists(atPath: bad.path))
        }
    }
}
