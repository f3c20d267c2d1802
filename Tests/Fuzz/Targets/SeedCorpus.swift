import DinoData
import DinoEval
import DinoKernels
import DinoModel
import DinoTraining
import Foundation

/// The committed seed corpora (`Tests/Fuzz/Corpus/TARGET/`), made by `dino-fuzz seeds FOLDER`: small
/// valid files of every kind the readers take, so that mutations start from deep inside each format.
public enum SeedCorpus {
    public static func write(to folder: URL) throws {
        func put(_ target: ReaderTarget, _ name: String, _ data: Data) throws {
            let dir = folder.appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try data.write(to: dir.appendingPathComponent(name))
        }
        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dino-seeds-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }

        // safetensors: a backbone of the fixture architecture, and the fixture trainer's checkpoint after a step.
        let recipe = ReaderFixtures.recipe()
        let config = ViTConfig(arch: "custom", imageSize: 8, patchSize: 4, inChannels: 1, embedDim: 8, depth: 1, numHeads: 2)
        try BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.25], seed: 1)
            .save(to: scratch.appendingPathComponent("backbone.safetensors"))
        try put(.safetensors, "backbone", Data(contentsOf: scratch.appendingPathComponent("backbone.safetensors")))
        var oneStep = recipe
        oneStep.max_steps = 1
        let run = scratch.appendingPathComponent("run")
        _ = try Trainer(recipe: oneStep, output: run, dataset: ReaderFixtures.NoiseImages()).run()
        try put(.safetensors, "training", Data(contentsOf: run.appendingPathComponent(TrainingCheckpoint.fileName)))
        // A backbone without dino.config (shapes inferred), as converted official weights are.
        let plain = try SafeTensors.read(scratch.appendingPathComponent("backbone.safetensors"))
        try SafeTensors.write(plain.tensors, metadata: [:], to: scratch.appendingPathComponent("plain.safetensors"))
        try put(.safetensors, "inferred", Data(contentsOf: scratch.appendingPathComponent("plain.safetensors")))

        // torch: the small archive of every kind of value (Tests/Goldens/make_torch_checkpoints.py).
        let goldens = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Goldens/torch")
        try put(.torch, "small", Data(contentsOf: goldens.appendingPathComponent("small.pth")))

        // npy: float32 (N, D), int64 labels, float64, and a format 2.0 header.
        try Npy.write((0..<6).map { Float($0) / 3 }, shape: [2, 3], to: scratch.appendingPathComponent("f.npy"))
        try put(.npy, "float32", Data(contentsOf: scratch.appendingPathComponent("f.npy")))
        try Npy.write([0, 1, 2, 1] as [Int64], shape: [4], to: scratch.appendingPathComponent("l.npy"))
        try put(.npy, "int64", Data(contentsOf: scratch.appendingPathComponent("l.npy")))
        var f8 = Npy.header(descr: "<f8", shape: [2, 2])
        for v in [1.0, -2.0, 0.5, 3.0] { withUnsafeBytes(of: v.bitPattern.littleEndian) { f8.append(contentsOf: $0) } }
        try put(.npy, "float64", f8)
        var v2 = Data([0x93] + Array("NUMPY".utf8) + [2, 0])
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }".padding(toLength: 115, withPad: " ", startingAt: 0) + "\n"
        withUnsafeBytes(of: UInt32(dict.utf8.count).littleEndian) { v2.append(contentsOf: $0) }
        v2.append(Data(dict.utf8)); v2.append(Data(count: 8))
        try put(.npy, "version2", v2)

        // IDX: 2 images of 4x4 raw, and 5 labels gzip-compressed.
        try put(.idx, "images", Data([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4] + (0..<32).map { UInt8($0 * 7 & 0xFF) }))
        try put(.idx, "labels-gz", try gzip(Data([0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5]), scratch: scratch))

        // Recipes: the shipped ones, and a short one with lists and booleans.
        let recipes = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Recipes")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: recipes.path)) ?? [] where name.hasSuffix(".yaml") {
            try put(.recipe, String(name.dropLast(5)), Data(contentsOf: recipes.appendingPathComponent(name)))
        }
        try put(.recipe, "short", Data("arch: custom\nembed_dim: 8\ndepth: 1\nnum_heads: 2\nglobal_crops_scale: [0.4, 1.0]\nnorm_last_layer: false\nlr: 1e-3\n".utf8))

        // Images: gray and RGB, odd sizes, in both codecs; and a CMYK JPEG (Tests/Fixtures, made by Pillow).
        try put(.jpeg, "cmyk", Data(contentsOf: goldens.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/rocket-cmyk.jpg")))
        var generator = RandomGenerator(seed: 5)
        for (w, h, c) in [(8, 8, 1), (13, 7, 3), (16, 16, 3)] {
            let image = Image(width: w, height: h, channels: c, pixels: (0..<(w * h * c)).map { _ in UInt8(generator.next() & 0xFF) })
            try put(.jpeg, "\(w)x\(h)x\(c)", ImageCodec.encodeJPEG(image, quality: 75))
            try put(.png, "\(w)x\(h)x\(c)", ImageCodec.encodePNG(image))
        }
    }

    /// `data` compressed with gzip(1).
    static func gzip(_ data: Data, scratch: URL) throws -> Data {
        let url = scratch.appendingPathComponent("gz-input")
        try data.write(to: url)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-n", "-f", url.path]
        try process.run(); process.waitUntilExit()
        return try Data(contentsOf: url.appendingPathExtension("gz"))
    }

    /// The committed corpus of `target`: every file in `Tests/Fuzz/Corpus/TARGET/`.
    public static func files(of target: ReaderTarget) -> [URL] {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Corpus").appendingPathComponent(target.rawValue)
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            .map { folder.appendingPathComponent($0) }
    }
}
