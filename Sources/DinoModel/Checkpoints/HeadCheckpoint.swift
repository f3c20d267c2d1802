import DinoKernels
import Foundation

/// The DINO head kept in a training checkpoint (an official `main_dino.py` file: `teacher.head.` or the
/// DDP student's `student.module.head.`; this project's: `teacher.head.`), for continuing training with it.
public struct HeadCheckpoint {
    public let config: HeadConfig
    /// The head's tensors in `ParameterLayout.appendHead` order (names relative to `head.`).
    public let parameters: FloatBuffer
    /// Where in the file the head was found.
    public let prefix: String

    /// Where heads are kept, best first (the teacher's is the one the official evaluation uses).
    static let prefixes = ["teacher.head.", "head.", "student.module.head.", "module.head."]

    /// The head of `url`'s file, or nil when it has none. Its sizes come from the tensor shapes;
    /// `normLastLayer` (not recorded in the file) is the caller's.
    public static func load(from url: URL, normLastLayer: Bool) throws -> HeadCheckpoint? {
        var isDirectory: ObjCBool = false  // a Hugging Face model folder: no head was published with those
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue { return nil }
        let data = try readInputFile(url, what: "checkpoint")
        let read = ZipArchive.isArchive(data) ? try TorchCheckpoint.read(data, name: url.path) : try SafeTensors.read(data, name: url.path)
        return try head(in: read, normLastLayer: normLastLayer, path: url.path)
    }

    /// The head of a file already read, or nil when it has none; `path` names it in errors.
    public static func head(in file: SafeTensors.File, normLastLayer: Bool, path: String) throws -> HeadCheckpoint? {
        guard let prefix = prefixes.first(where: { file.tensor($0 + "last_layer.weight_v") != nil }),
              let direction = file.tensor(prefix + "last_layer.weight_v"), direction.shape.count == 2 else { return nil }
        let (outDim, bottleneck) = (direction.shape[0], direction.shape[1])
        let config: HeadConfig
        if let single = file.tensor(prefix + "mlp.weight"), single.shape.count == 2 {
            config = HeadConfig(inDim: single.shape[1], outDim: outDim, hiddenDim: bottleneck, bottleneckDim: bottleneck, layerCount: 1,
                                normLastLayer: normLastLayer)
        } else {
            let count = (0..<16).prefix { file.tensor(prefix + "mlp.\(2 * $0).weight") != nil }.count
            guard count >= 2, let first = file.tensor(prefix + "mlp.0.weight"), first.shape.count == 2 else {
                throw DinoError("\(path): a DINO head under '\(prefix)' whose MLP is not the official one (mlp.0, mlp.2, … Linear layers)")
            }
            config = HeadConfig(inDim: first.shape[1], outDim: outDim, hiddenDim: first.shape[0], bottleneckDim: bottleneck,
                                layerCount: count, normLastLayer: normLastLayer)
        }
        try config.validate()
        let layout = ParameterLayout.head(config)
        let parameters = FloatBuffer(count: layout.count)
        try loadTensors(file, prefix: prefix, into: parameters.pointer, layout: layout, path: path,
                        ignoring: file.tensors.map(\.name).filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
                            .filter { !layout.contains($0) })
        return HeadCheckpoint(config: config, parameters: parameters, prefix: prefix)
    }
}
