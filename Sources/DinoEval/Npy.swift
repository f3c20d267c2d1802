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

    /// The format 1.0 header of an array of `descr` (e.g. `<f4`) and `shape`, padded to 64 bytes.
    public static func header(descr: String, shape: [Int]) -> Data {
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
        try read(readInputFile(url, what: ".npy file"), name: url.path)
    }

    /// Parses a `.npy` file held in memory (format versions 1–3, little-endian float32, float64 or
    /// int64, C order). The header's shape is checked against the bytes present before allocating.
    public static func read(_ data: Data, name: String) throws -> (values: [Float], shape: [Int]) {
        let bytes = [UInt8](data)
        func refuse(_ why: String) -> DinoError {
            DinoError("\(name) is not a readable .npy file: \(why); write it with numpy.save or dino features")
        }
        guard bytes.count >= 10, bytes[0..<6] == [0x93] + Array("NUMPY".utf8)[...] else { throw refuse("no NUMPY magic") }
        let major = bytes[6]
        guard (1...3).contains(major) else { throw refuse("format version \(major) is unknown") }
        let start = major == 1 ? 10 : 12
        guard bytes.count >= start else { throw refuse("the header is cut off") }
        let headerLength = major == 1 ? Int(bytes[8]) | Int(bytes[9]) << 8
            : Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        guard headerLength <= bytes.count - start else { throw refuse("the header declares \(headerLength) bytes past the end") }
        let header = String(decoding: bytes[start..<(start + headerLength)], as: UTF8.self)
        guard let descr = quotedValue(of: "descr", in: header), let width = ["<f4": 4, "<f8": 8, "<i8": 8][descr] else {
            throw DinoError("\(name): only little-endian float32, float64 and int64 arrays are read ('<f4', '<f8', '<i8')")
        }
        guard header.contains("'fortran_order': False") else { throw DinoError("\(name): only C-order arrays are read (fortran_order False)") }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw refuse("no shape in the header")
        }
        let fields = header[open.upperBound..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        let shape = fields.compactMap { Int($0) }
        let body = start + headerLength
        guard shape.count == fields.count, let count = checkedElementCount(shape, limit: (bytes.count - body) / width) else {
            throw refuse("its shape (\(fields.joined(separator: ", "))) does not fit the \(bytes.count - body) data bytes")
        }
        let values = bytes.withUnsafeBytes { raw -> [Float] in
            let p = raw.baseAddress! + body
            return (0..<count).map { i in
                switch descr {
                case "<f4": return Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case "<f8": return Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                default: return Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                }
            }
        }
        return (values, shape)
    }

    /// The quoted value of `'key': '...'` in a header dictionary.
    static func quotedValue(of key: String, in header: String) -> String? {
        guard let k = header.range(of: "'\(key)':") else { return nil }
        let rest = header[k.upperBound...].drop { $0 == " " }
        guard let quote = rest.first, quote == "'" || quote == "\"" else { return nil }
        let inner = rest.dropFirst()
        guard let end = inner.firstIndex(of: quote) else { return nil }
        return String(inner[..<end])
    }
}
