import DinoKernels
import DinoModel
import Foundation

/// NumPy `.npy` files (format 1.0): float32 or int64 arrays, little-endian, C order.
public enum Npy {
    public static func write(_ values: [Float], shape: [Int], to url: URL) throws {
        try writeAtomically(header(descr: "<f4", shape: shape) + values.withUnsafeBytes { Data($0) }, to: url)
    }

    public static func write(_ values: [Int64], shape: [Int], to url: URL) throws {
        try writeAtomically(header(descr: "<i8", shape: shape) + values.withUnsafeBytes { Data($0) }, to: url)
    }

    static func header(descr: String, shape: [Int]) -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + dict.count + 1) % 64 != 0 { dict += " " }
        dict += "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        withUnsafeBytes(of: UInt16(dict.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(dict.utf8))
        return data
    }

    /// Reads a float32, float64 or int64 `.npy` as Float values with its shape.
    public static func read(_ url: URL) throws -> (values: [Float], shape: [Int]) {
        guard let data = try? Data(contentsOf: url) else { throw DinoError("cannot read \(url.path)") }
        guard data.count > 10, data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
            throw DinoError("\(url.path) is not a .npy file")
        }
        let major = data[data.startIndex + 6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(data[data.startIndex + 8]) | Int(data[data.startIndex + 9]) << 8; start = 10
        } else {
            headerLength = data.subdata(in: 8..<12).withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }; start = 12
        }
        let header = String(decoding: data.subdata(in: start..<(start + headerLength)), as: UTF8.self)
        guard !header.contains("'fortran_order': True") else { throw DinoError("\(url.path): Fortran-order arrays are not supported") }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw DinoError("\(url.path): no shape in the .npy header")
        }
        let shape = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let count = shape.reduce(1, *)
        let body = start + headerLength
        var values = [Float](repeating: 0, count: count)
        let width = header.contains("<f4") ? 4 : 8
        guard data.count - body >= count * width else { throw DinoError("\(url.path) is truncated") }
        data.withUnsafeBytes { raw in
            let p = raw.baseAddress! + body
            for i in 0..<count {
                if header.contains("<f4") {
                    values[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                } else if header.contains("<f8") {
                    values[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                } else {
                    values[i] = Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                }
            }
        }
        guard header.contains("<f4") || header.contains("<f8") || header.contains("<i8") else {
            throw DinoError("\(url.path): only float32, float64 and int64 arrays are read")
        }
        return (values, shape)
    }
}
