import DinoKernels
import Foundation

/// Deterministic mutations of a seed file, for the suite's short fuzz pass (libFuzzer does the long
/// runs): bit flips, random and boundary bytes, boundary integers, insertions, deletions, truncation,
/// duplicated stretches and, for text, numbers replaced by extreme ones.
public struct Mutator {
    var generator: RandomGenerator

    public init(seed: UInt64) { generator = RandomGenerator(seed: seed) }

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(generator.next() % UInt64(n)) }

    static let boundaryBytes: [UInt8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]
    static let boundaryWords: [UInt64] = [0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000,
                                          0x7FFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 1 << 40, 100_000]
    static let extremeNumbers = ["-1", "0", "99999999999999999999", "1e308", "-1e308", "nan", ".inf", "4294967296",
                                 "9223372036854775807", "-9223372036854775808", "1.5", "[]", "{}", "null", "\"x\""]

    /// One to four mutations of `seed`.
    public mutating func mutate(_ seed: Data) -> Data {
        var bytes = [UInt8](seed)
        for _ in 0..<(1 + below(4)) {
            switch below(9) {
            case 0 where !bytes.isEmpty:
                bytes[below(bytes.count)] ^= UInt8(1 << below(8))
            case 1 where !bytes.isEmpty:
                bytes[below(bytes.count)] = UInt8(generator.next() & 0xFF)
            case 2 where !bytes.isEmpty:
                bytes[below(bytes.count)] = Self.boundaryBytes[below(Self.boundaryBytes.count)]
            case 3 where bytes.count >= 8:
                let width = [2, 4, 8][below(3)], at = below(bytes.count - width + 1)
                var word = Self.boundaryWords[below(Self.boundaryWords.count)]
                if below(2) == 0 { word = word.byteSwapped >> UInt64(64 - 8 * width) }
                for i in 0..<width { bytes[at + i] = UInt8((word >> UInt64(8 * i)) & 0xFF) }
            case 4:
                let at = below(bytes.count + 1)
                bytes.insert(contentsOf: (0..<(1 + below(16))).map { _ in UInt8(generator.next() & 0xFF) }, at: at)
            case 5 where !bytes.isEmpty:
                let at = below(bytes.count), length = 1 + below(min(64, bytes.count - at))
                bytes.removeSubrange(at..<(at + length))
            case 6 where !bytes.isEmpty:
                bytes.removeLast(below(bytes.count))
            case 7 where !bytes.isEmpty:
                let at = below(bytes.count), length = 1 + below(min(256, bytes.count - at))
                bytes.insert(contentsOf: bytes[at..<(at + length)], at: below(bytes.count + 1))
            default:
                // A run of digits replaced by an extreme value (text formats: YAML, JSON headers, .npy shapes).
                let digits = bytes.indices.filter { (0x30...0x39).contains(bytes[$0]) }
                guard !digits.isEmpty else { continue }
                var start = digits[below(digits.count)], end = start
                while start > 0 && (0x30...0x39).contains(bytes[start - 1]) { start -= 1 }
                while end + 1 < bytes.count && (0x30...0x39).contains(bytes[end + 1]) { end += 1 }
                bytes.replaceSubrange(start...end, with: Array(Self.extremeNumbers[below(Self.extremeNumbers.count)].utf8))
            }
        }
        return Data(bytes)
    }
}
