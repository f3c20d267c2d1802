import DinoKernels
import Foundation

/// ImageNet's per-channel statistics, the official default normalization.
public let imageNetMean: [Float] = [0.485, 0.456, 0.406]
public let imageNetStd: [Float] = [0.229, 0.224, 0.225]

/// A self-describing backbone file: the tensors under the official `VisionTransformer` state-dict
/// names and shapes, with the architecture and input normalization in the safetensors metadata
/// (`dino.config`, `dino.mean`, `dino.std`).
public struct BackboneCheckpoint {
    public var config: ViTConfig
    public var mean: [Float]
    public var std: [Float]
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    /// What the file was, in words (this project's backbone, a training checkpoint, an official DINO file).
    public var source = "a dino backbone"
    /// The short side images are resized to before the central `config.imageSize` crop when features are
    /// evaluated (metadata `dino.eval_resize`, from the training recipe's `eval_resize`); nil: the official
    /// `imageSize` x 256/224.
    public var evaluationResize: Int?

    public init(config: ViTConfig, mean: [Float], std: [Float], parameters: FloatBuffer? = nil) {
        self.config = config; self.mean = mean; self.std = std
        layout = .backbone(config)
        self.parameters = parameters ?? FloatBuffer(count: layout.count)
        precondition(self.parameters.count == layout.count)
    }

    /// A freshly initialized backbone (official init).
    public static func initialized(config: ViTConfig, mean: [Float], std: [Float], seed: UInt64) -> BackboneCheckpoint {
        let checkpoint = BackboneCheckpoint(config: config, mean: mean, std: std)
        var generator = RandomGenerator(seed: seed)
        Initialization.initialize(checkpoint.parameters.pointer, layout: checkpoint.layout, generator: &generator,
                                  layerScale: config.layerScaleInit)
        return checkpoint
    }

    public var transformer: VisionTransformer { VisionTransformer(config: config, layout: layout) }

    public func save(to url: URL, extraMetadata: [String: String] = [:]) throws {
        var metadata = extraMetadata
        metadata["format"] = "pt"
        metadata["dino.kind"] = "backbone"
        metadata["dino.config"] = try encodeJSON(config)
        metadata["dino.mean"] = try encodeJSON(mean)
        metadata["dino.std"] = try encodeJSON(std)
        if let evaluationResize { metadata[Self.evaluationResizeKey] = String(evaluationResize) }
        try SafeTensors.write(tensors(layout: layout, parameters: parameters.pointer), metadata: metadata, to: url)
    }

    /// Loads a backbone from a backbone file, or the teacher's backbone from a training checkpoint.
    /// A file without `dino.config` (e.g. converted from an official PyTorch checkpoint) has its
    /// architecture inferred from the tensor shapes, with 64-wide heads and ImageNet statistics.
    ///
    /// PyTorch files (`torch.save`'s zip archives) are read too: the official DINO backbone files (a plain
    /// state dict, e.g. `dino_deitsmall16_pretrain.pth`) and training checkpoints (the `teacher`'s
    /// `backbone.` part; `student` with DDP's `module.` prefix when there is no teacher).
    ///
    /// DINOv2's hub files (`dinov2_vits14_pretrain.pth`, `_reg4`, chunked blocks) and timm's DINO and DINOv2
    /// models are read with their architecture inferred from the shapes (`ForeignLayout`).
    ///
    /// Hugging Face `transformers` ViT and DINOv2 models are read as downloaded: the model folder, or its
    /// `model.safetensors` or `pytorch_model.bin`, with the `config.json` beside it. A `dino train` run
    /// folder stands for its `teacher_backbone.safetensors`.
    public static func load(from url: URL) throws -> BackboneCheckpoint {
        var file = url
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            // A Hugging Face model folder, or a dino run folder (its teacher, the weights to evaluate).
            guard let weights = ["model.safetensors", "pytorch_model.bin", "teacher_backbone.safetensors"].map({ url.appendingPathComponent($0) })
                .first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
                throw DinoError("cannot read checkpoint \(url.path): it is a folder without model.safetensors or pytorch_model.bin (a Hugging Face model) or teacher_backbone.safetensors (a dino run); give the checkpoint file itself")
            }
            file = weights
        }
        let data = try readInputFile(file, what: "checkpoint")
        let read: SafeTensors.File
        do {
            read = ZipArchive.isArchive(data) ? try TorchCheckpoint.read(data, name: file.path) : try SafeTensors.read(data, name: file.path)
        } catch {
            guard let kind = otherFileKind(data) else { throw error }
            throw DinoError("\(file.path) \(kind)")
        }
        if read.metadata["dino.config"] == nil, let prefix = HuggingFaceViT.prefix(in: read) {
            let renamed = try HuggingFaceViT.renamed(read, prefix: prefix, path: file.path)
            let json = FileManager.default.contents(atPath: file.deletingLastPathComponent().appendingPathComponent("config.json").path)
            let config = try HuggingFaceViT.config(json, renamed: renamed, path: file.path)
            var checkpoint = try load(renamed, path: file.path, config: config)
            let parts = ForeignLayout.dinov2Parts(config)
            checkpoint.source = "a Hugging Face transformers " + (parts.isEmpty ? "ViT" : parts)
                + (json == nil ? " (no config.json beside it: heads of 64 and transformers' default eps assumed)" : "")
            return checkpoint
        }
        return try load(read, path: file.path)
    }

    /// What a file dino cannot read as a checkpoint is, when its first bytes tell (an image given as
    /// --checkpoint, a torch.save file from before PyTorch 1.6), and what to do: the end of a sentence
    /// that begins with the file's path.
    static func otherFileKind(_ data: Data) -> String? {
        let bytes = [UInt8](data.prefix(8))
        func starts(_ magic: [UInt8]) -> Bool { bytes.starts(with: magic) }
        if starts([0xFF, 0xD8, 0xFF]) { return "is a JPEG image, not a checkpoint" }
        if starts([0x89, 0x50, 0x4E, 0x47]) { return "is a PNG image, not a checkpoint" }
        if starts([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) { return "is a NumPy .npy array (features?), not a checkpoint" }
        if starts([0x1F, 0x8B]) { return "is a gzip archive, not a checkpoint: unpack it first" }
        // torch.save before PyTorch 1.6 (or with _use_new_zipfile_serialization=False) wrote a bare pickle.
        if starts([0x80]) && bytes.count > 1 && (2...5).contains(bytes[1]) {
            return "is a PyTorch file in the legacy (pre-1.6) format, which dino does not read: re-save it with a current PyTorch, torch.save(torch.load(F, weights_only=True), F)"
        }
        if !bytes.isEmpty, bytes.allSatisfy({ $0 == 0x09 || $0 == 0x0A || $0 == 0x0D || (0x20..<0x7F).contains($0) }) {
            return "is a text file (\(String(decoding: data.prefix(40), as: UTF8.self).split(separator: "\n").first ?? "")...), not a checkpoint"
        }
        return nil
    }

    /// Where a file without this project's metadata keeps its backbone, and what to call that layout.
    static let foreignLayouts: [(prefix: String, layout: String)] = [
        ("", "a backbone state dict in the official DINO / DINOv2 layout"),
        ("teacher.backbone.", "an official DINO training checkpoint (its teacher)"),
        ("teacher.", "a teacher state dict in the official DINO layout"),
        ("student.module.backbone.", "an official DINO training checkpoint without a teacher (its student)"),
        ("module.backbone.", "a DDP-wrapped student state dict in the official DINO layout"),
        ("backbone.", "a MultiCropWrapper state dict in the official DINO layout"),
        ("model.", "a state dict under 'model'"), ("state_dict.", "a state dict under 'state_dict'"),
    ]

    /// Loads a backbone from a checkpoint file already read; `path` names it in errors.
    public static func load(_ file: SafeTensors.File, path: String) throws -> BackboneCheckpoint {
        try load(file, path: path, config: nil)
    }

    /// With `config`, the architecture is that one (a Hugging Face config.json), not the file's or inferred.
    static func load(_ read: SafeTensors.File, path: String, config given: ViTConfig?) throws -> BackboneCheckpoint {
        let url = URL(fileURLWithPath: path)
        var file = read
        var prefix = file.metadata["dino.kind"] == "training" ? "teacher." : ""
        var source = file.metadata["dino.kind"] == "training" ? "a dino training checkpoint (its teacher)" : "a dino backbone"
        if file.metadata["dino.config"] == nil {
            let names = Set(file.tensors.map(\.name))
            guard let found = foreignLayouts.first(where: { names.contains($0.prefix + "cls_token") && names.contains($0.prefix + "patch_embed.proj.weight") }) else {
                let first = file.tensors.prefix(6).map(\.name).joined(separator: ", ")
                throw DinoError("\(path): unknown checkpoint layout (no ViT backbone found; the first tensors are \(first.isEmpty ? "none" : first)); official DINO files and this project's are read")
            }
            (prefix, source) = found
            let normalized = ForeignLayout.normalize(file, prefix: prefix)
            file = normalized.file
            if let layout = normalized.layout { source += " (\(layout))" }
        }
        let config: ViTConfig
        if let given {
            config = given
        } else if let text = file.metadata["dino.config"] {
            config = try decodeJSON(ViTConfig.self, text, what: "dino.config in \(url.path)")
        } else {
            config = try ForeignLayout.inferConfig(file, prefix: prefix, path: url.path)
        }
        let parts = ForeignLayout.dinov2Parts(config)
        if !parts.isEmpty && file.metadata["dino.config"] == nil && given == nil { source += ", \(parts)" }
        try config.validate()
        let mean = try file.metadata["dino.mean"].map { try decodeJSON([Float].self, $0, what: "dino.mean") }
            ?? (config.inChannels == 3 ? imageNetMean : [0.5])
        let std = try file.metadata["dino.std"].map { try decodeJSON([Float].self, $0, what: "dino.std") }
            ?? (config.inChannels == 3 ? imageNetStd : [0.5])
        try checkStatistics(mean: mean, std: std, channels: config.inChannels, names: ("dino.mean", "dino.std"), source: url.path)
        try checkParameterCount(file, prefix: prefix, layout: .backbone(config), path: url.path)
        var checkpoint = BackboneCheckpoint(config: config, mean: mean, std: std)
        try loadTensors(file, prefix: prefix, into: checkpoint.parameters.pointer, layout: checkpoint.layout,
                        path: url.path, ignoring: ["head.", "mask_token"])
        checkpoint.source = source
        checkpoint.evaluationResize = try evaluationResize(file.metadata[evaluationResizeKey], config: config, path: url.path)
        return checkpoint
    }

    /// The metadata key of `evaluationResize`.
    public static let evaluationResizeKey = "dino.eval_resize"

    /// `dino.eval_resize` read and checked: a whole number from the model's image size to 65536.
    static func evaluationResize(_ text: String?, config: ViTConfig, path: String) throws -> Int? {
        guard let text else { return nil }
        guard let value = Int(text), value >= config.imageSize, value <= 65536 else {
            throw DinoError("\(path): \(evaluationResizeKey) is '\(text.prefix(40))', not a size from the model's \(config.imageSize) px to 65536")
        }
        return value
    }
}

/// The tensors of `layout` read from `parameters`, with an optional name prefix.
public func tensors(layout: ParameterLayout, parameters: UnsafePointer<Float>, prefix: String = "") -> [NamedTensor] {
    layout.entries.map { e in
        NamedTensor(name: prefix + e.name, shape: e.shape,
                    values: Array(UnsafeBufferPointer(start: parameters + e.offset, count: e.count)))
    }
}

/// Copies every tensor of `layout` from `file` (names under `prefix`), strictly: a missing tensor, a
/// shape mismatch, or an unexpected tensor under the prefix is an error naming the first such tensor.
public func loadTensors(_ file: SafeTensors.File, prefix: String, into parameters: UnsafeMutablePointer<Float>,
                        layout: ParameterLayout, path: String, ignoring ignoredPrefixes: [String] = []) throws {
    var byName: [String: NamedTensor] = [:]
    for t in file.tensors where t.name.hasPrefix(prefix) { byName[String(t.name.dropFirst(prefix.count))] = t }
    for e in layout.entries {
        guard let t = byName.removeValue(forKey: e.name) else {
            throw DinoError("\(path) does not match the architecture: tensor '\(prefix)\(e.name)' \(e.shape) is missing")
        }
        let fileShape = t.shape.reduce(1, *) == 1 && e.count == 1 ? e.shape : t.shape
        guard fileShape == e.shape else {
            throw DinoError("\(path) does not match the architecture: tensor '\(prefix)\(e.name)' has shape \(t.shape) in the file but \(e.shape) is expected")
        }
        t.values.withUnsafeBufferPointer { (parameters + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }
    let unexpected = byName.keys.filter { name in !ignoredPrefixes.contains { name.hasPrefix($0) } }.sorted()
    if let first = unexpected.first {
        throw DinoError("\(path) does not match the architecture: it has tensor '\(prefix)\(first)' that the model has no place for (\(unexpected.count) such tensors)")
    }
}

/// Refuses a file whose metadata declares more parameters under `prefix` than its tensors hold, before
/// anything of that size is allocated (a hostile `dino.config` cannot make the reader allocate).
public func checkParameterCount(_ file: SafeTensors.File, prefix: String, layout: ParameterLayout, path: String) throws {
    let held = file.tensors.reduce(0) { $0 + ($1.name.hasPrefix(prefix) ? $1.values.count : 0) }
    guard layout.count <= held else {
        throw DinoError("\(path) does not match the architecture its metadata declares: \(layout.count) parameters are needed under '\(prefix)', the file holds \(held)")
    }
}

/// Sorted-key JSON text for safetensors metadata.
public func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Decodes metadata JSON; a failure is an error naming `what`.
public func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String, what: String) throws -> T {
    do { return try JSONDecoder().decode(type, from: Data(text.utf8)) } catch {
        throw DinoError("cannot read \(what): \(error)")
    }
}

/// Checks per-channel input statistics for a `channels`-channel model: 1 or `channels` values each, every
/// mean finite, every std finite and positive (a zero std divides by zero: every feature would be NaN).
/// `names` says where they came from in the error: `--mean` / `--std` (the default), `--normalization`, a
/// file's metadata keys (with the file as `source`, the errors' prefix).
public func checkStatistics(mean: [Float], std: [Float], channels: Int,
                            names: (mean: String, std: String) = ("--mean", "--std"), source: String? = nil) throws {
    let prefix = source.map { "\($0): " } ?? ""
    guard [1, channels].contains(mean.count), [1, channels].contains(std.count) else {
        let counts = channels == 1 ? "1 value each" : "1 or \(channels) values each"
        throw DinoError("\(prefix)\(names.mean) and \(names.std) need \(counts) for this \(channels)-channel model, not \(mean.count) and \(std.count)")
    }
    guard mean.allSatisfy(\.isFinite) else { throw DinoError("\(prefix)\(names.mean): every mean must be a finite number, not \(mean)") }
    guard std.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw DinoError("\(prefix)\(names.std): every std must be a positive number, not \(std)") }
}

/// The input normalization a command applies before the backbone: the checkpoint's own statistics,
/// ImageNet's (photos, and every published DINO / DINOv2 model), none (pixels in [0, 1]), or given values.
public enum InputNormalization: Equatable, Sendable {
    case checkpoint, imageNet, none
    case values(mean: [Float], std: [Float])

    /// Reads `checkpoint`, `imagenet`, `none`, or `M,M,M/S,S,S` (1 or C values each).
    public init(parsing text: String) throws {
        switch text.lowercased() {
        case "checkpoint": self = .checkpoint
        case "imagenet": self = .imageNet
        case "none": self = .none
        default:
            let halves = text.split(separator: "/", omittingEmptySubsequences: false)
            let parsed = halves.map { $0.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) } }
            guard parsed.count == 2, parsed.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0?.isFinite ?? false } }) else {
                throw DinoError("--normalization takes checkpoint, imagenet, none, or MEAN/STD values such as 0.5,0.5,0.5/0.25,0.25,0.25, not '\(text)'")
            }
            let mean = parsed[0].compactMap { $0 }, std = parsed[1].compactMap { $0 }
            guard std.allSatisfy({ $0 > 0 }) else { throw DinoError("--normalization: every std must be positive, not \(std)") }
            self = .values(mean: mean, std: std)
        }
    }

    /// The (mean, std) for a `channels`-channel model whose file holds `checkpoint`'s statistics.
    public func statistics(channels: Int, checkpoint: (mean: [Float], std: [Float])) throws -> (mean: [Float], std: [Float]) {
        switch self {
        case .checkpoint: return checkpoint
        case .none: return ([0], [1])
        case .imageNet:
            guard channels == 3 else {
                throw DinoError("--normalization imagenet is for RGB models; this model reads \(channels) channel(s): use checkpoint or MEAN/STD")
            }
            return (imageNetMean, imageNetStd)
        case .values(let mean, let std):
            try checkStatistics(mean: mean, std: std, channels: channels, names: ("--normalization's means", "stds"))
            return (mean, std)
        }
    }
}
