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

    /// Reads F32, F16, BF16 and F64 (converted to Float), and I64 and U8 (as Float, for labels and pixels).
    public static func read(_ url: URL) throws -> File {
        try read(readInputFile(url, what: "checkpoint"), name: url.path)
    }

    /// The element widths of the dtypes read, in bytes.
    static let widths = ["F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "U8": 1]

    /// Parses a safetensors file held in memory. Every declared size (header length, shapes, offsets)
    /// is checked against the bytes present before a tensor is allocated, so a corrupt or hostile file
    /// is refused with an error naming `name`, never a crash or an absurd allocation.
    public static func read(_ data: Data, name: String) throws -> File {
        func refuse(_ why: String) -> DinoError {
            DinoError("\(name) is not a safetensors file: \(why); the file may be truncated or corrupt")
        }
        guard data.count >= 8 else { throw refuse("only \(data.count) bytes") }
        let declared = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared >= 2, declared <= UInt64(min(data.count - 8, InputLimits.maximumHeaderBytes)) else {
            throw refuse("its header declares \(declared) bytes of the \(data.count - 8) that follow")
        }
        let base = 8 + Int(declared)
        let headerBytes = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + base))
        guard let header = (try? JSONSerialization.jsonObject(with: headerBytes)) as? [String: Any] else {
            throw refuse("its header is not a JSON object")
        }
        var entries: [(name: String, dtype: String, shape: [Int], start: Int)] = []
        var metadata: [String: String] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                guard let m = value as? [String: String] else { throw refuse("__metadata__ is not a map of strings") }
                metadata = m
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = integers(entry["shape"]), let offsets = integers(entry["data_offsets"]), offsets.count == 2
            else { throw refuse("tensor '\(key)' has no dtype, shape and data_offsets") }
            guard let width = widths[dtype] else {
                throw DinoError("\(name): tensor '\(key)' has dtype \(dtype), which is not read (F32, F16, BF16, F64, I64 and U8 are)")
            }
            let available = data.count - base
            guard let count = checkedElementCount(shape, limit: available / width),
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= available,
                  offsets[1] - offsets[0] == count * width else {
                throw refuse("tensor '\(key)' of shape \(shape) does not fit its data_offsets \(offsets) in \(available) data bytes")
            }
            entries.append((key, dtype, shape, base + offsets[0]))
        }
        // The file's data order, so layouts read back in the order they were written.
        entries.sort { $0.start != $1.start ? $0.start < $1.start : $0.name < $1.name }
        let tensors = data.withUnsafeBytes { raw -> [NamedTensor] in
            entries.map { e in
                let count = checkedElementCount(e.shape)!   // checked above
                let bytes = raw.baseAddress! + e.start
                let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
                    for i in 0..<count {
                        switch e.dtype {
                        case "F32": out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                        case "F64": out[i] = Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                        case "F16": out[i] = TorchCheckpoint.halfToFloat(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                        case "BF16": out[i] = TorchCheckpoint.bfloat16ToFloat(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                        case "U8": out[i] = Float(bytes.load(fromByteOffset: i, as: UInt8.self))
                        default: out[i] = Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                        }
                    }
                    initialized = count
                }
                return NamedTensor(name: e.name, shape: e.shape, values: values)
            }
        }
        return File(tensors: tensors, metadata: metadata)
    }

    /// A JSON array of integers (JSONSerialization's numbers), or nil.
    static func integers(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var out: [Int] = []
        for v in list {
            guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue), Double(n.int64Value) == n.doubleValue else { return nil }
            out.append(i)
        }
        return out
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

/// Removes the temporary files `writeAtomically` leaves when a process is killed mid-write.
public func removeStaleTemporaryFiles(in folder: URL) {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    where name.hasPrefix(".") && name.hasSuffix(".tmp") {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
    }
}

/// Writes `data` to a temporary file beside `url`, flushes it, then renames it over `url`, so a crash
/// never leaves a half-written file under the final name.
public func writeAtomically(_ data: Data, to url: URL) throws {
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), isFolder.boolValue {
        throw DinoError("cannot write \(url.path): it is a folder; give a file name")
    }
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
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw DinoError("cannot write \(url.path): \(reason)")
    }
}
