import DinoKernels
import Foundation

/// The stored (uncompressed) entries of a zip archive, as `torch.save` writes them: each entry's
/// bytes located through the central directory (zip64 included), every offset checked against the
/// file before it is used.
public struct ZipArchive: Sendable {
    /// Entry name → the range of its bytes in the archive's data.
    public let entries: [String: Range<Int>]

    /// Whether `data` starts like a zip archive (a local file header).
    public static func isArchive(_ data: Data) -> Bool {
        data.count >= 4 && data.prefix(4).elementsEqual([0x50, 0x4B, 0x03, 0x04])
    }

    public init(_ data: Data, name: String) throws {
        let bytes = [UInt8](data)
        func refuse(_ why: String) -> DinoError {
            DinoError("\(name) is not a readable zip archive (\(why)); the file may be truncated or corrupt")
        }
        func u16(_ at: Int) throws -> Int {
            guard at >= 0, at + 2 <= bytes.count else { throw refuse("a field past the end") }
            return Int(bytes[at]) | Int(bytes[at + 1]) << 8
        }
        func u32(_ at: Int) throws -> Int { try u16(at) | u16(at + 2) << 16 }
        func u64(_ at: Int) throws -> Int {
            let high = try u32(at + 4)
            guard high < 1 << 30 else { throw refuse("a 64-bit field beyond any real size") }
            return try u32(at) | high << 32
        }
        // The end-of-central-directory record: within the last 65,557 bytes.
        var end = -1
        var at = bytes.count - 22
        while at >= max(0, bytes.count - 65_557) {
            if bytes[at] == 0x50, bytes[at + 1] == 0x4B, bytes[at + 2] == 0x05, bytes[at + 3] == 0x06 { end = at; break }
            at -= 1
        }
        guard end >= 0 else { throw refuse("no end of central directory") }
        var count = try u16(end + 10), directory = try u32(end + 16)
        if count == 0xFFFF || directory == 0xFFFF_FFFF {   // zip64: the locator sits just before the record
            let locator = end - 20
            guard locator >= 0, try u32(locator) == 0x0706_4B50 else { throw refuse("no zip64 locator") }
            let record = try u64(locator + 8)
            guard try u32(record) == 0x0606_4B50 else { throw refuse("no zip64 end record") }
            count = try u64(record + 32); directory = try u64(record + 48)
        }
        guard count <= bytes.count / 46 else { throw refuse("\(count) entries declared in \(bytes.count) bytes") }
        var entries: [String: Range<Int>] = [:]
        var cursor = directory
        for _ in 0..<count {
            guard try u32(cursor) == 0x0201_4B50 else { throw refuse("a broken central directory") }
            let method = try u16(cursor + 10)
            var compressed = try u32(cursor + 20), size = try u32(cursor + 24)
            let nameLength = try u16(cursor + 28), extraLength = try u16(cursor + 30), commentLength = try u16(cursor + 32)
            var local = try u32(cursor + 42)
            guard cursor + 46 + nameLength + extraLength <= bytes.count else { throw refuse("an entry past the end") }
            let entryName = String(decoding: bytes[(cursor + 46)..<(cursor + 46 + nameLength)], as: UTF8.self)
            // The zip64 extra field holds, in order, whichever of size, compressed size and offset are 0xFFFFFFFF.
            var extra = cursor + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try u16(extra), length = try u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF { size = try u64(field); field += 8 }
                    if compressed == 0xFFFF_FFFF { compressed = try u64(field); field += 8 }
                    if local == 0xFFFF_FFFF { local = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0, compressed == size else {
                throw DinoError("\(name): entry \(entryName) is compressed (method \(method)); only stored entries are read, as torch.save writes them")
            }
            guard try u32(local) == 0x0403_4B50 else { throw refuse("entry \(entryName) has no local header") }
            let start = local + 30 + (try u16(local + 26)) + (try u16(local + 28))
            guard start <= bytes.count, size <= bytes.count - start else { throw refuse("entry \(entryName) runs past the end") }
            entries[entryName] = start..<(start + size)
            cursor += 46 + nameLength + extraLength + commentLength
        }
        self.entries = entries
    }
}
