import DinoData
import DinoEval
import DinoKernels
import DinoModel
import DinoTraining
import Foundation

/// One reader of untrusted input, run on arbitrary bytes. A reader passes when it returns or throws a
/// `DinoError` (the one-line error a user sees); it fails by crashing, which the fuzzer reports, or by
/// throwing anything else, which `run` turns into a crash so that the fuzzer reports that too.
public enum ReaderTarget: String, CaseIterable, Sendable {
    /// `SafeTensors.read`, then a backbone load, or a training-checkpoint restore when the metadata says so.
    case safetensors
    /// PyTorch checkpoints: the zip archive, the restricted unpickler, the tensors, then a backbone load.
    case torch
    /// The IDX reader (gzip or raw) for 1- and 3-dimensional files.
    case idx
    /// `Npy.read`.
    case npy
    /// A recipe's YAML, applied and validated.
    case recipe
    /// The JPEG decode path, to 1 and 3 channels, at full size and scaled.
    case jpeg
    /// The PNG decode path, to 1 and 3 channels.
    case png

    /// Feeds `data` to the reader.
    public func run(_ data: Data) {
        do { try body(data) } catch is DinoError {} catch {
            fatalError("\(rawValue): a reader threw \(type(of: error)) instead of DinoError: \(error)")
        }
    }

    func body(_ data: Data) throws {
        switch self {
        case .safetensors:
            let file = try SafeTensors.read(data, name: "input")
            if file.metadata["dino.kind"] == "training" {
                try ReaderFixtures.trainer.restore(file, path: "input")
            } else {
                _ = try BackboneCheckpoint.load(file, path: "input")
            }
        case .torch:
            _ = try BackboneCheckpoint.load(TorchCheckpoint.read(data, name: "input"), path: "input")
        case .idx:
            let bytes = try gunzipIfCompressed(data, name: "input")
            _ = try? FashionMNIST.parseIDX(bytes, dimensions: 1, name: "input")
            _ = try FashionMNIST.parseIDX(bytes, dimensions: 3, name: "input")
        case .npy:
            _ = try Npy.read(data, name: "input")
        case .recipe:
            var recipe = Recipe()
            try recipe.apply(yaml: String(decoding: data, as: UTF8.self), source: "input")
            try recipe.validate()
            _ = recipe.yaml
        case .jpeg, .png:
            // Both decode by content; the target names only the seed corpus.
            _ = try? ImageCodec.decode(data, channels: 1, name: "input")
            _ = try ImageCodec.decode(data, channels: 3, minimumShortSide: 4, name: "input")
        }
    }
}

/// What the readers are fuzzed against: a tiny trainer whose checkpoints the training-checkpoint seeds are.
public enum ReaderFixtures {
    /// A 1-block, 8-wide gray ViT with patch 4 on 8 px crops and a 16-prototype head, on 8 noise images.
    public static func recipe() -> Recipe {
        var r = Recipe()
        r.arch = "custom"; r.embed_dim = 8; r.depth = 1; r.num_heads = 2; r.patch_size = 4; r.in_chans = 1
        r.out_dim = 16; r.head_hidden_dim = 16; r.bottleneck_dim = 8
        r.global_crop_size = 8; r.local_crop_size = 4; r.local_crops_number = 1
        r.batch_size = 4; r.epochs = 2; r.warmup_epochs = 1; r.num_workers = 1
        return r
    }

    /// Eight 8x8 gray images of noise.
    public struct NoiseImages: ImageDataset {
        public init() {}
        public var count: Int { 8 }
        public var classNames: [String] { [] }
        public func label(at index: Int) -> Int { -1 }
        public func name(at index: Int) -> String { "noise[\(index)]" }
        public func image(at index: Int, channels: Int, minimumShortSide: Int?) throws -> Image {
            var generator = RandomGenerator(seed: UInt64(index))
            return Image(width: 8, height: 8, channels: 1, pixels: (0..<64).map { _ in UInt8(generator.next() & 0xFF) })
                .converted(to: channels)
        }
    }

    nonisolated(unsafe) public static let trainer: Trainer = {
        // One folder for every process: the trainer only restores into itself and never writes there.
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dino-fuzz-trainer")
        return try! Trainer(recipe: recipe(), output: folder, dataset: NoiseImages())
    }()
}
