import Foundation

/// Reading untrusted files: every size a file declares is checked against what the file holds and
/// against these limits before anything is allocated for it.
public enum InputLimits {
    /// The most pixels a decoded image may have: PIL's decompression-bomb limit (2 × 89,478,485).
    public static let maximumImagePixels = 178_956_970
    /// The most bytes a decompressed file (gzip IDX) may have.
    public static let maximumDecompressedBytes = 1 << 31
    /// The largest safetensors JSON header (the format's own limit is 100 MB).
    public static let maximumHeaderBytes = 100_000_000
}

/// The number of elements of a tensor of shape `dimensions`: nil when a dimension is negative or the
/// product exceeds `limit` (or `Int.max`), so that a declared shape never becomes an absurd allocation.
public func checkedElementCount(_ dimensions: [Int], limit: Int = Int.max) -> Int? {
    var count = 1
    for d in dimensions {
        guard d >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow, product <= limit else { return nil }
        count = product
    }
    return count <= limit ? count : nil   // a scalar (no dimensions) is one element, which must fit too
}

/// The bytes of the file at `url`, or an error that says what is wrong with the path: missing, a
/// folder, unreadable. `what` names the file's role ("checkpoint", "image", "recipe").
public func readInputFile(_ url: URL, what: String) throws -> Data {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw DinoError("cannot read \(what) \(url.path): it does not exist; check the path")
    }
    guard !isDirectory.boolValue else {
        throw DinoError("cannot read \(what) \(url.path): it is a folder; give the file itself")
    }
    guard FileManager.default.isReadableFile(atPath: url.path), let data = try? Data(contentsOf: url) else {
        throw DinoError("cannot read \(what) \(url.path): check its permissions")
    }
    return data
}

/// Creates the folder `url` and its missing parents, or throws an error naming the path in the way: the
/// nearest existing parent when it is a file or not writable (Foundation's own message names neither).
/// `what` names the folder's role ("output folder", "run folder").
public func createFolder(_ url: URL, what: String) throws {
    do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    } catch {
        var parent = url.deletingLastPathComponent()
        while parent.path != "/" && !FileManager.default.fileExists(atPath: parent.path) { parent = parent.deletingLastPathComponent() }
        var folder: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: parent.path, isDirectory: &folder)
        let reason = !folder.boolValue ? "\(parent.path) is a file"
            : !FileManager.default.isWritableFile(atPath: parent.path) ? "\(parent.path) is not writable"
            : error.localizedDescription
        throw DinoError("cannot create the \(what) \(url.path): \(reason); choose another")
    }
}
