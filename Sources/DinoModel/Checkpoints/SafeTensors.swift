import DinoKernels
import Foundation

/// A tensor read from or written to a safetensors file, held as Float32.
public struct NamedTensor: Sendable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]
    public init(name: String, shape: [Int], values: [Float]) {
        self.name = name; self.shape = shape; self.values = values
    }
}

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length, a JSON
/// header `{name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}`, then raw data.
/// PyTorch's `safetensors.torch.load_file` reads what this writes with no renaming.
public enum SafeTensors {
    public struct File: Sendable {
        public var tensors: [NamedTensor]
        public var metadata: [String: String]
        public func tensor(_ name: String) -> NamedTensor? { tensors.first { $0.name == name } }
    }

    /// Reads F32, F64 (converted to Float), and I64 and U8 (as Float, for labels and pixels).
    public static func read(_ url: URL) throws -> File {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DinoError("cannot read \(url.path): \(error.localizedDescription)")
        }
        guard data.count >= 8 else { throw DinoError("\(url.path) is not a safetensors file (only \(data.count) bytes)") }
        let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 0, 8 + headerLength <= data.count,
              let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any]
        else { throw DinoError("\(url.path) is not a safetensors file (bad header)") }
        let base = 8 + headerLength
        var tensors: [NamedTensor] = []
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
            else { throw DinoError("\(url.path): malformed entry for tensor '\(name)'") }
            let count = shape.reduce(1, *)
            let start = base + offsets[0], end = base + offsets[1]
            let width = ["F32": 4, "F64": 8, "I64": 8, "U8": 1][dtype]
            guard let width else { throw DinoError("\(url.path): tensor '\(name)' has unsupported dtype \(dtype) (F32, F64, I64, U8 are read)") }
            guard end <= data.count, end - start == count * width else {
                throw DinoError("\(url.path): tensor '\(name)' is truncated or its size does not match its shape \(shape)")
            }
            var values = [Float](repeating: 0, count: count)
            data.withUnsafeBytes { raw in
                let bytes = raw.baseAddress! + start
                for i in 0..<count {
                    switch dtype {
                    case "F32": values[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                    case "F64": values[i] = Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                    case "U8": values[i] = Float(bytes.load(fromByteOffset: i, as: UInt8.self))
                    default: values[i] = Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                    }
                }
            }
            tensors.append(NamedTensor(name: name, shape: shape, values: values))
        }
        // Keep the file's data order, so layouts read back in the order they were written.
        let order = Dictionary(uniqueKeysWithValues: header.compactMap { k, v -> (String, Int)? in
            guard let e = v as? [String: Any], let o = e["data_offsets"] as? [Int] else { return nil }
            return (k, o[0])
        })
        tensors.sort { order[$0.name, default: 0] < order[$1.name, default: 0] }
        return File(tensors: tensors, metadata: metadata)
    }

    /// Writes F32 tensors atomically: to a temporary file in the same folder, then renamed over `url`.
    public static func write(_ tensors: [NamedTensor], metadata: [String: String], to url: URL) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for t in tensors {
            precondition(t.values.count == t.shape.reduce(1, *), "\(t.name): values do not match shape")
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var file = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for t in tensors {
            t.values.withUnsafeBufferPointer { file.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!)
                .assumingMemoryBound(to: UInt8.self), count: 4 * $0.count)) }
        }
        try writeAtomically(file, to: url)
    }
}

/// Writes `data` to a temporary file beside `url`, flushes it, then renames it over `url`, so a crash
/// never leaves a half-written file under the final name.
public func writeAtomically(_ data: Data, to url: URL) throws {
    let folder = url.deletingLastPathComponent()
    try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil),
          let handle = FileHandle(forWritingAtPath: temporary.path) else {
        throw DinoError("cannot write \(temporary.path): check that \(folder.path) exists and is writable")
    }
    do {
        try handle.write(contentsOf: data)
        try handle.synchronize()
        try handle.close()
    } catch {
        try? FileManager.default.removeItem(at: temporary)
        throw DinoError("cannot write \(url.path): \(error.localizedDescription)")
    }
    if rename(temporary.path, url.path) != 0 {
        try? FileManager.default.removeItem(at: temporary)
        throw DinoError("cannot move \(temporary.path) to \(url.path): errno \(errno)")
    }
}
