import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import XCTest

/// `dino init`, `features`, `knn`, `linear` and `attention` run as a user runs them: the good paths
/// check what was written, the bad inputs a one-line error, a non-zero exit and no output file.
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
        XCTAssertEqual(try Npy.read(out).shape, [16, 32])
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

        // An output without .npy gets it (as numpy.save), so that knn reads the file as features.
        let bare = folder.appendingPathComponent("bare")
        let written = runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path, "--output", bare.path])
        assertSucceeded(written)
        XCTAssertTrue(written.stdout.contains("wrote \(bare.path).npy: 16 x 32 features"), written.stdout)
        XCTAssertTrue(files(in: folder).contains("bare.npy") && files(in: folder).contains("bare.labels.npy") && !files(in: folder).contains("bare"))
        assertSucceeded(runDino(["knn", "--train", bare.path + ".npy", "--test", bare.path + ".npy"]))
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
        assertRefused(knn(Inputs.labelledFolder.path, ["--test", good.path]), "give --checkpoint")
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

    // MARK: attention

    func testAttentionOnAPhotoWithoutAMask() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("maps")
        let jpeg = Inputs.file("photo.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path,
                              "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("photo.png: 12x10 patches"), result.stdout)
        XCTAssertTrue(result.stdout.contains("wrote 35 PNGs"), result.stdout)
        let written = files(in: out)
        XCTAssertEqual(written.count, 35, "2 + 3 x (4 heads + mean) per image and the overview, names kept apart: \(written)")
        // The sheet: input + mean + 4 heads across, heat / overlay / mask down, each cell 48x40 x 6 = 288x240.
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 6 * (288 + 2))
        XCTAssertGreaterThan(sheet.height, 3 * 240)
        let overview = try ImageCodec.decode(contentsOf: out.appendingPathComponent("attention-overview.png"), channels: 3)
        XCTAssertEqual(overview.width, 2 + 8 * (288 + 2), "input, mean heat, overlay, mask, then 4 heads")
        for name in ["photo-image.png", "photo-attn-mean.png", "photo-attn-head3.png", "photo-overlay-mean.png", "photo-mask60-head0.png",
                     "photo_jpg-image.png"] {
            XCTAssertTrue(written.contains(name), "\(name) missing from \(written)")
            let image = try ImageCodec.decode(contentsOf: out.appendingPathComponent(name), channels: 3)
            XCTAssertEqual([image.width, image.height], [48, 40], name)
        }
        // With a mask per image, and a gray model on the RGB photo; summary-only writes nothing.
        let mask = Inputs.file("mask.png", try ImageCodec.encodePNG(Image(width: 48, height: 40, channels: 1, pixels: (0..<(48 * 40)).map { i in
            (12..<28).contains(i / 48) && (16..<32).contains(i % 48) ? 255 : 0 })))
        let masked = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", Inputs.photo.path, "--mask", mask.path,
                              "--output", folder.appendingPathComponent("masked").path, "--size", "24"])
        assertSucceeded(masked)
        XCTAssertTrue(masked.stdout.contains("photo.png: 7x6 patches"), masked.stdout)
        let summary = folder.appendingPathComponent("summary")
        assertSucceeded(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                                 "--output", summary.path, "--summary-only"]))
        XCTAssertEqual(files(in: summary), [])
        // --png-limit: the shares of every image, the pictures of the first.
        let limited = folder.appendingPathComponent("limited")
        let first = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path,
                             "--output", limited.path, "--png-limit", "1"])
        assertSucceeded(first)
        XCTAssertTrue(first.stdout.contains("photo.jpg: 12x10 patches") && first.stdout.contains("over 2 image(s)"), first.stdout)
        XCTAssertTrue(first.stdout.contains("wrote 17 PNGs to \(limited.path) (the first image; --png-limit raises it)"), first.stdout)
        XCTAssertEqual(files(in: limited).count, 17)
        XCTAssertFalse(files(in: limited).contains { $0.hasPrefix("photo_jpg") }, "\(files(in: limited))")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                               "--output", limited.path, "--png-limit", "-1"]), "--png-limit", status: 64)
    }

    /// Two images of one file name in different folders are printed and written under the folders that
    /// tell them apart (a/x.png and b/x.png: a_x-*, b_x-*), in attention and pca alike; the same file
    /// twice keeps the earlier `_png` stem for its second set.
    func testImagesOfOneNameInTwoFoldersAreKeptApart() throws {
        let folder = makeTemporaryFolder()
        let bytes = try Data(contentsOf: Inputs.photo)
        let first = Inputs.file("a/x.png", bytes), second = Inputs.file("b/x.png", bytes)
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", first.path, second.path, first.path,
                              "--output", out.path])
        assertSucceeded(result)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.prefix(3).map { $0.components(separatedBy: ":").first ?? "" }, ["a/x.png", "b/x.png", "a/x.png"], result.stdout)
        let written = files(in: out)
        for stem in ["a_x", "b_x", "a_x_png"] {
            XCTAssertEqual(written.filter { $0.hasPrefix(stem + "-") }.count, 17, "3 x (4 heads + mean) + image + sheet; " + "\(stem): \(written)")
        }
        let pca = folder.appendingPathComponent("pca")
        let components = runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", first.path, second.path, "--output", pca.path])
        assertSucceeded(components)
        XCTAssertTrue(components.stdout.contains("a/x.png:") && components.stdout.contains("b/x.png:"), components.stdout)
        XCTAssertEqual(files(in: pca), ["a_x-pca-sheet.png", "a_x-pca.png", "b_x-pca-sheet.png", "b_x-pca.png", "pca-overview.png"])
    }

    /// A legal but extreme image, 16000x4 (4000 patches, under the attention's limit, so it runs at its own
    /// size): every sheet's cells stay within 1024 px on their long side (a whole-factor enlargement to 224 px
    /// on the short side would have drawn 896,000-px cells, gigabytes of canvas), while the maps at the
    /// image's own size keep every pixel.
    func testPicturesOfAStripStayBounded() throws {
        let folder = makeTemporaryFolder()
        let strip = Inputs.file("strip.png", try ImageCodec.encodePNG(Image(width: 16_000, height: 4, channels: 1,
                                                                           pixels: (0..<64_000).map { UInt8(($0 * 7) % 256) })))
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", strip.path, Inputs.photo.path,
                              "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("strip.png: 4000x1 patches"), result.stdout)
        let map = try ImageCodec.decode(contentsOf: out.appendingPathComponent("strip-attn-mean.png"), channels: 3)
        XCTAssertEqual([map.width, map.height], [16_000, 4])
        // input + mean + 4 heads across; the strip's cells 1024x1, the photo's 288x240 in the overview.
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("strip-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 6 * (1024 + 2))
        XCTAssertLessThan(sheet.height, 200)
        let overview = try ImageCodec.decode(contentsOf: out.appendingPathComponent("attention-overview.png"), channels: 3)
        XCTAssertEqual(overview.width, 2 + 8 * (1024 + 2))
        XCTAssertLessThan(overview.height, 2 * (240 + 40) + 40)
        let pca = folder.appendingPathComponent("pca")
        assertSucceeded(runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", strip.path, "--output", pca.path]))
        let pcaSheet = try ImageCodec.decode(contentsOf: pca.appendingPathComponent("strip-pca-sheet.png"), channels: 3)
        XCTAssertEqual(pcaSheet.width, 2 + 4 * (1024 + 2))
        XCTAssertLessThan(pcaSheet.height, 200)
    }

    /// A camera-sized photo (more patches than the attention allows) is resized whole to the model's
    /// training size, in attention and pca alike: a 400x300 image, dark on the left and bright on the right,
    /// becomes 20x16 (5x4 patches) with both halves in it, not its top-left 20x16 pixels at full size.
    /// A photo with no dark background gets no foreground share (it would read 100% whatever the model).
    func testCameraSizedPhotosAreResizedWhole() throws {
        let folder = makeTemporaryFolder()
        let halfPixels: [UInt8] = (0..<(400 * 300 * 3)).map { (i: Int) -> UInt8 in (i / 3) % 400 < 200 ? 0 : 230 }
        let halves = Inputs.file("halves.png", try ImageCodec.encodePNG(Image(width: 400, height: 300, channels: 3, pixels: halfPixels)))
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", halves.path, "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("halves.png: 5x4 patches, ") && result.stdout.contains("% of the mean attention on the foreground"),
                      result.stdout)
        XCTAssertTrue(result.stdout.contains("mean foreground share over 1 image(s)"), result.stdout)
        let seen = try ImageCodec.decode(contentsOf: out.appendingPathComponent("halves-image.png"), channels: 1)
        XCTAssertEqual([seen.width, seen.height], [20, 16])
        for row in 0..<16 {
            XCTAssertLessThan(seen.pixels[row * 20 + 1], 30, "row \(row): the left half is dark")
            XCTAssertGreaterThan(seen.pixels[row * 20 + 18], 200, "row \(row): the right half is bright")
        }
        let pca = folder.appendingPathComponent("pca")
        let components = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", halves.path, "--output", pca.path])
        assertSucceeded(components)
        XCTAssertTrue(components.stdout.contains("halves.png: 5x4 patches"), components.stdout)
        // Every patch bright: no share is claimed, per image or overall.
        let brightPixels: [UInt8] = (0..<(40 * 32 * 3)).map { (i: Int) -> UInt8 in UInt8(120 + (i / 3) % 40) }
        let bright = Inputs.file("bright.png", try ImageCodec.encodePNG(Image(width: 40, height: 32, channels: 3, pixels: brightPixels)))
        let photos = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", bright.path, "--output", out.path, "--summary-only"])
        assertSucceeded(photos)
        XCTAssertTrue(photos.stdout.contains("bright.png: 10x8 patches, no dark background to measure against"), photos.stdout)
        XCTAssertTrue(photos.stdout.contains("no foreground share: every patch of every image is brighter than 10%"), photos.stdout)
        XCTAssertFalse(photos.stdout.contains("100.0%"), photos.stdout)
        let mixed = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", bright.path, Inputs.photo.path,
                             "--output", out.path, "--summary-only"])
        assertSucceeded(mixed)
        XCTAssertTrue(mixed.stdout.contains("mean foreground share over 2 image(s)") && mixed.stdout.contains("(1 of them have no dark background"),
                      mixed.stdout)
        // A phone photo stored on its side (EXIF orientation 6) is shown upright: 40x24, not 24x40.
        let sideways = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/orientation/orientation-6.jpg")
        let upright = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", sideways.path, "--output", out.path])
        assertSucceeded(upright)
        XCTAssertTrue(upright.stdout.contains("orientation-6.jpg: 10x6 patches"), upright.stdout)
        let seenUpright = try ImageCodec.decode(contentsOf: out.appendingPathComponent("orientation-6-image.png"), channels: 1)
        XCTAssertEqual([seenUpright.width, seenUpright.height], [40, 24])
    }

    /// A quoted pattern is expanded by dino (sorted, folders left out), as the shell would have; one that
    /// matches nothing is refused naming it, and the masks are counted against the expanded images.
    func testQuotedImagePatternsAreExpanded() throws {
        let folder = makeTemporaryFolder()
        let bytes = try Data(contentsOf: Inputs.photo)
        let photos = folder.appendingPathComponent("photos")
        for name in ["b.png", "a.png", "notes.txt", "sub.png/c.png"] {
            let url = photos.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try bytes.write(to: url)
        }
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png", "--output", out.path,
                              "--summary-only"])
        assertSucceeded(result)
        let names = result.stdout.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) }
        XCTAssertEqual(Array(names.prefix(2)), ["a.png", "b.png"], result.stdout)
        XCTAssertTrue(result.stdout.contains("over 2 image(s)"), result.stdout)
        let pca = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/?.png", "--output", out.path])
        assertSucceeded(pca)
        XCTAssertTrue(pca.stdout.contains("a.png:") && pca.stdout.contains("b.png:"), pca.stdout)
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.jpg", "--output", out.path]),
                      "error: --image '\(photos.path)/*.jpg' matches no file")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png",
                               "--mask", Inputs.photo.path, "--output", out.path]), "give one --mask per --image (2 images, 1 masks)")
    }

    func testAttentionRefusesBadImagesAndOptions() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("maps")
        func attention(_ images: [String], _ extra: [String] = []) -> ProcessResult {
            runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image"] + images + ["--output", out.path] + extra)
        }
        assertRefused(attention([folder.appendingPathComponent("missing.jpg").path]), "missing.jpg", "does not exist")
        // A folder: the shell's glob is the way to give its images.
        assertRefused(attention([Inputs.photo.path, folder.path]),
                      "error: --image \(folder.path) is a folder: give its images, e.g. --image \(folder.path)/*.jpg", status: 64)
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", folder.path, "--output", out.path]),
                      "--image \(folder.path) is a folder", status: 64)
        assertRefused(attention([Inputs.photo.path, Inputs.file("empty.jpg", Data()).path]), "empty.jpg", "neither a JPEG nor a PNG")
        assertRefused(attention([Inputs.truncated(Inputs.photo, as: "half.png").path]), "half.png", "truncated or corrupt")
        assertRefused(attention([Inputs.corrupted(Inputs.photo, as: "noise.png").path]), "noise.png")
        let jpeg = Inputs.file("photo-for-noise.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        assertRefused(attention([Inputs.truncated(jpeg, as: "half.jpg").path]), "half.jpg", "not a readable JPEG")
        assertRefused(attention([Inputs.pngHeader(width: 100_000, height: 100_000, name: "bomb.png").path]), "bomb.png", "100000x100000")
        assertRefused(attention([Inputs.pngHeader(width: 0, height: 7, name: "zero.png").path]), "zero.png")
        assertRefused(attention([folder.path]), "is a folder")
        // Too many patches for the attention matrices at the --size given: the error names --size (without
        // --size such an image is resized to the model's training size).
        let big = Inputs.file("big.png", try ImageCodec.encodePNG(Image(width: 400, height: 300, channels: 1, pixels: .init(repeating: 9, count: 120_000))))
        assertRefused(attention([big.path], ["--size", "300"]), "big.png", "--size")
        assertSucceeded(attention([big.path], ["--size", "32", "--summary-only"]))
        // Refused before the image is enlarged (120000x100000 would be 36 GB of pixels).
        assertRefused(attention([Inputs.photo.path], ["--size", "100000"]), "photo.png", "--size")
        assertRefused(attention([Inputs.photo.path], ["--mask", Inputs.photo.path, Inputs.photo.path]), "one --mask per --image")
        assertRefused(attention([Inputs.photo.path], ["--threshold", "0"]), "--threshold", status: 64)
        assertRefused(attention([Inputs.photo.path], ["--size", "0"]), "--size", status: 64)
        assertRefused(attention([Inputs.photo.path], ["--fashion-mnist-test", "-1"]), "--fashion-mnist-test", status: 64)
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--output", out.path]), "give --image")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.file("bad.safetensors", Data(count: 100)).path,
                               "--image", Inputs.photo.path, "--output", out.path]), "bad.safetensors")
        XCTAssertEqual(files(in: out), [], "a refused run wrote files")
    }

    // MARK: pca

    func testPCAOfPatchTokens() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("pca")
        let jpeg = Inputs.file("pca-photo.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        let result = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path, "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("photo.png: 12x10 patches"), result.stdout)
        XCTAssertEqual(files(in: out), ["pca-overview.png", "pca-photo-pca-sheet.png", "pca-photo-pca.png", "photo-pca-sheet.png", "photo-pca.png"])
        let colours = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-pca.png"), channels: 3)
        XCTAssertEqual([colours.width, colours.height], [48, 40])
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-pca-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 4 * (288 + 2), "input, first component, foreground, colours; cells 6x the 48x40 image")
        // Gray model, one image, resized.
        assertSucceeded(runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", Inputs.photo.path, "--size", "16",
                                 "--output", folder.appendingPathComponent("gray").path]))
        XCTAssertEqual(files(in: folder.appendingPathComponent("gray")), ["photo-pca-sheet.png", "photo-pca.png"])

        let bad = folder.appendingPathComponent("bad")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", folder.appendingPathComponent("none.png").path,
                               "--output", bad.path]), "none.png", "does not exist")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.truncated(Inputs.photo, as: "pca-half.png").path,
                               "--output", bad.path]), "pca-half.png")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--output", bad.path]), "give --image")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, "--threshold", "1",
                               "--output", bad.path]), "--threshold", status: 64)
        assertRefused(runDino(["pca", "--checkpoint", Inputs.file("pca.safetensors", Data("{}".utf8)).path, "--image", Inputs.photo.path,
                               "--output", bad.path]), "pca.safetensors")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image",
                               Inputs.pngHeader(width: 100_000, height: 100_000, name: "pca-bomb.png").path, "--output", bad.path]), "pca-bomb.png")
        XCTAssertEqual(files(in: bad), [])
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
