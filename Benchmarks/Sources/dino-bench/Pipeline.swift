import DinoData
import DinoKernels
import DinoTraining
import Foundation

/// Data-pipeline throughput: decode + every multi-crop view of a batch, on `workers` threads, in
/// images per second. Run with 1 worker for images/s per core, to compare with a training step's
/// images/s (the pipeline keeps up when one core of it is faster than the step on the others).
struct PipelineBenchmark {
    let name: String
    let workers: Int
    let repeats: Int
    let dataPath: String?

    static let names = ["pipeline-fmnist", "pipeline-folder"]

    func run() throws -> [String: Any] {
        let recipe: Recipe
        let dataset: any ImageDataset
        var description = ""
        var temporary: URL? = nil
        defer { if let temporary { try? FileManager.default.removeItem(at: temporary) } }
        if name == "pipeline-fmnist" {
            // The Fashion-MNIST recipes' views: 2 × 28 px + 6 × 14 px, batch 128.
            recipe = try Quickstart.recipe()
            dataset = try FashionMNIST(split: .train)
            description = "Fashion-MNIST, \(recipe.local_crops_number) local crops"
        } else {
            // The official ImageNet views: 2 × 224 px + 10 × 96 px, on 500×375 JPEGs (ImageNet's typical size).
            recipe = try Recipe.load(path: nil, overrides: ["local_crops_number=10", "batch_size=32", "dataset=folder"])
            if let dataPath {
                dataset = try ImageFolder(path: dataPath)
                description = dataPath
            } else {
                let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dino-bench-\(getpid())")
                temporary = folder
                try Self.writeSyntheticJPEGs(to: folder.appendingPathComponent("images"), count: 64)
                dataset = try ImageFolder(path: folder.path)
                description = "64 synthetic 500x375 JPEGs (quality 90)"
            }
        }
        let settings = recipe.augmentationSettings(mean: [0.5, 0.5, 0.5].prefix(recipe.in_chans).map { $0 },
                                                   std: [0.25, 0.25, 0.25].prefix(recipe.in_chans).map { $0 })
        let batch = min(recipe.batch_size, dataset.count)
        let loader = try MultiCropLoader(dataset: dataset, augmenter: MultiCropAugmenter(settings: settings),
                                         batchSize: batch, seed: 0, onBadImage: .fail, workers: workers)
        var times: [Double] = []
        for step in 0..<(repeats + 1) {
            let start = Date()
            _ = try loader.batch(step: step % loader.iterationsPerEpoch)
            if step > 0 { times.append(Date().timeIntervalSince(start)) }
        }
        let seconds = median(times)
        return ["program": "dino", "config": name, "workers": workers, "batch": batch, "data": description,
                "images_per_s": Double(batch) / seconds, "images_per_s_per_worker": Double(batch) / seconds / Double(workers),
                "seconds_per_step": seconds, "peak_rss_mib": peakResidentMiB()]
    }

    /// Smooth colour fields with noise, so the JPEGs carry about the entropy of photos.
    static func writeSyntheticJPEGs(to folder: URL, count: Int) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var g = RandomGenerator(seed: 7)
        let (width, height) = (500, 375)
        for index in 0..<count {
            var pixels = [UInt8](repeating: 0, count: width * height * 3)
            let phase = (0..<6).map { _ in g.uniform(0, 6.28) }, frequency = (0..<6).map { _ in g.uniform(0.005, 0.05) }
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<3 {
                        let wave = sin(Double(x) * frequency[c] + phase[c]) * cos(Double(y) * frequency[c + 3] + phase[c + 3])
                        let value = 128 + 90 * wave + g.uniform(-20, 20)
                        pixels[(y * width + x) * 3 + c] = UInt8(max(0, min(255, value)))
                    }
                }
            }
            let data = try ImageCodec.encodeJPEG(Image(width: width, height: height, channels: 3, pixels: pixels))
            try data.write(to: folder.appendingPathComponent(String(format: "%03d.jpg", index)))
        }
    }
}
