import DinoKernels
import Foundation

/// PyTorch checkpoints as `torch.save` writes them (`.pth`, `.pt`, `pytorch_model.bin`): a zip archive
/// holding a pickle (`*/data.pkl`) and one raw entry per storage (`*/data/KEY`). The pickle is read
/// by `Unpickler`, which runs nothing; every tensor's size, strides and offset are checked against its
/// storage before its values are copied. Half, bfloat16 and double tensors become Float32.
public enum TorchCheckpoint {
    /// Every tensor of the archive under its path of dict keys joined by dots (`teacher.backbone.cls_token`).
    /// Non-tensor values (an epoch number, the run's arguments, optimizer settings) are read and dropped.
    public static func read(_ data: Data, name: String) throws -> SafeTensors.File {
        let archive = try ZipArchive(data, name: name)
        let pickles = archive.entries.keys.filter { $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }
        guard pickles.count == 1, let pickleName = pickles.first, let pickleRange = archive.entries[pickleName] else {
            throw DinoError("\(name) is a zip archive but not a torch.save checkpoint (\(pickles.isEmpty ? "no" : "more than one") data.pkl)")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        var unpickler = Unpickler(data.subdata(in: pickleRange.lowerBound..<pickleRange.upperBound), name: name)
        let root = try unpickler.load()
        var tensors: [NamedTensor] = []
        func walk(_ value: PickleValue, _ path: String) throws {
            switch value {
            case .tensor(let t):
                tensors.append(NamedTensor(name: path, shape: t.shape, values: try values(of: t, archive: archive, prefix: prefix, data: data, name: name, tensor: path)))
            case .dict(let pairs):
                for (key, item) in pairs {
                    let part: String
                    switch key {
                    case .string(let s): part = s
                    case .int(let i): part = String(i)
                    default: continue
                    }
                    try walk(item, path.isEmpty ? part : path + "." + part)
                }
            default: break   // lists (optimizer parameter groups), numbers, inert objects
            }
        }
        try walk(root, "")
        return SafeTensors.File(tensors: tensors, metadata: [:])
    }

    /// The tensor's elements in row-major order as Float.
    static func values(of t: TorchTensor, archive: ZipArchive, prefix: String, data: Data, name: String, tensor: String) throws -> [Float] {
        func refuse(_ why: String) -> DinoError { DinoError("\(name): tensor '\(tensor)' \(why); the checkpoint may be corrupt") }
        guard let range = archive.entries[prefix + "data/" + t.storage.key] else { throw refuse("has no storage data/\(t.storage.key)") }
        let width = t.storage.type.width
        guard let storageBytes = checkedElementCount([t.storage.count, width]), storageBytes <= range.count else {
            throw refuse("declares \(t.storage.count) elements, more than its storage's \(range.count) bytes hold")
        }
        guard let count = checkedElementCount(t.shape, limit: t.storage.count), t.offset >= 0, t.strides.allSatisfy({ $0 >= 0 }) else {
            throw refuse("of shape \(t.shape) does not fit its storage of \(t.storage.count) elements")
        }
        var last = t.offset   // the largest element index the view reads
        for (size, stride) in zip(t.shape, t.strides) where size > 0 {
            let (step, overflow) = (size - 1).multipliedReportingOverflow(by: stride)
            guard !overflow, step <= t.storage.count else { throw refuse("has strides past its storage") }
            last += step
        }
        guard count == 0 || last < t.storage.count else { throw refuse("of shape \(t.shape) reads past its storage of \(t.storage.count) elements") }
        let type = t.storage.type
        return data.withUnsafeBytes { raw -> [Float] in
            let base = raw.baseAddress! + range.lowerBound
            func element(_ i: Int) -> Float {
                let p = base + i * width
                switch type {
                case .float32: return Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
                case .float16: return halfToFloat(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
                case .bfloat16: return bfloat16ToFloat(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
                case .float64: return Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))))
                case .int64: return Float(Int64(littleEndian: p.loadUnaligned(as: Int64.self)))
                case .int32: return Float(Int32(littleEndian: p.loadUnaligned(as: Int32.self)))
                case .int16: return Float(Int16(littleEndian: p.loadUnaligned(as: Int16.self)))
                case .int8: return Float(p.load(as: Int8.self))
                case .uint8, .bool: return Float(p.load(as: UInt8.self))
                }
            }
            var out = [Float](repeating: 0, count: count)
            var index = [Int](repeating: 0, count: t.shape.count)
            for i in 0..<count {   // walk the view in row-major order
                var at = t.offset
                for d in index.indices { at += index[d] * t.strides[d] }
                out[i] = element(at)
                var d = index.count - 1
                while d >= 0 { index[d] += 1; if index[d] < t.shape[d] { break }; index[d] = 0; d -= 1 }
            }
            return out
        }
    }

    /// bfloat16 to Float: the same sign, exponent and top mantissa bits, so exact.
    public static func bfloat16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// IEEE half precision to Float (subnormals, infinities and NaN included).
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31, exponent = Int(h >> 10) & 0x1F, mantissa = UInt32(h & 0x3FF)
        if exponent == 0 {
            return Float(bitPattern: sign) + (sign != 0 ? -1 : 1) * Float(mantissa) * 0x1p-24
        }
        if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
    }
}
