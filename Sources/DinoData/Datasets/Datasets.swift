import CZlib
import DinoKernels
import Foundation

/// A finite, indexable set of images with optional class labels.
public protocol ImageDataset: Sendable {
    var count: Int { get }
    /// Class names, ordered by label; empty when the data has no labels.
    var classNames: [String] { get }
    /// The label of image `index`, or −1 when unlabeled.
    func label(at index: Int) -> Int
    /// A human-readable name (relative path, or "train[123]").
    func name(at index: Int) -> String
    /// Decodes image `index` with `channels` channels.
    func image(at index: Int, channels: Int, minimumShortSide: Int?) throws -> Image
}

extension ImageDataset {
    public var labels: [Int] { (0..<count).map { label(at: $0) } }
}

/// What to do with an image that cannot be decoded.
public enum BadImagePolicy: String, Codable, Sendable {
    /// Stop with an error naming the file.
    case fail
    /// Skip it, count it, and report the count.
    case skip
}

// MARK: - Fashion-MNIST (IDX files, gzip)

/// Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist`
/// (`/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`).
public struct FashionMNIST: ImageDataset {
    public static let defaultFolder = "/usr/share/datasets/fashion-mnist"
    public static let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot"]
    /// Mean and standard deviation of the training pixels (in [0, 1]).
    public static let mean: [Float] = [0.2860]
    public static let std: [Float] = [0.3530]

    public enum Split: String, Sendable { case train, test }

    public let split: Split
    public let side = 28
    let pixels: [UInt8]
    let labelValues: [UInt8]

    public var count: Int { labelValues.count }
    public var classNames: [String] { Self.classes }
    public func label(at index: Int) -> Int { Int(labelValues[index]) }
    public func name(at index: Int) -> String { "\(split.rawValue)[\(index)]" }

    public init(split: Split, folder: String = FashionMNIST.defaultFolder) throws {
        self.split = split
        let prefix = split == .train ? "train" : "t10k"
        let imagesPath = "\(folder)/\(prefix)-images-idx3-ubyte.gz", labelsPath = "\(folder)/\(prefix)-labels-idx1-ubyte.gz"
        guard FileManager.default.fileExists(atPath: imagesPath) else {
            throw DinoError("Fashion-MNIST not found at \(imagesPath): install it with `apt-get install dataset-fashion-mnist`, or set data_path to the folder holding the IDX files")
        }
        let images = try Self.readIDX(imagesPath, dimensions: 3)
        let labels = try Self.readIDX(labelsPath, dimensions: 1)
        guard images.shape[1] == 28, images.shape[2] == 28, images.shape[0] == labels.shape[0] else {
            throw DinoError("\(imagesPath) and \(labelsPath) do not describe the same 28x28 images (\(images.shape) vs \(labels.shape))")
        }
        if let bad = labels.data.first(where: { Int($0) >= Self.classes.count }) {
            throw DinoError("\(labelsPath) holds label \(bad); Fashion-MNIST labels are 0...9")
        }
        pixels = images.data
        labelValues = labels.data
    }

    public func image(at index: Int, channels: Int, minimumShortSide: Int? = nil) throws -> Image {
        let plane = Array(pixels[(index * 784)..<((index + 1) * 784)])
        return Image(width: 28, height: 28, channels: 1, pixels: plane).converted(to: channels)
    }

    /// Reads an IDX file of unsigned bytes, gzip-compressed or not.
    public static func readIDX(_ path: String, dimensions: Int) throws -> (shape: [Int], data: [UInt8]) {
        let file = try readInputFile(URL(fileURLWithPath: path), what: "IDX file")
        return try parseIDX(gunzipIfCompressed(file, name: path), dimensions: dimensions, name: path)
    }

    /// Parses IDX bytes: magic `00 00 08 ndim`, big-endian sizes, then the data, checked to be all there.
    public static func parseIDX(_ bytes: [UInt8], dimensions: Int, name: String) throws -> (shape: [Int], data: [UInt8]) {
        guard bytes.count >= 4 + 4 * dimensions, bytes[0] == 0, bytes[1] == 0, bytes[2] == 8, Int(bytes[3]) == dimensions else {
            throw DinoError("\(name) is not an IDX file of unsigned bytes with \(dimensions) dimensions")
        }
        var shape: [Int] = []
        for d in 0..<dimensions {
            let o = 4 + 4 * d
            shape.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        let start = 4 + 4 * dimensions
        guard let count = checkedElementCount(shape, limit: bytes.count - start) else {
            throw DinoError("\(name) is truncated: its shape \(shape) needs more than the \(bytes.count - start) bytes it holds")
        }
        return (shape, Array(bytes[start..<(start + count)]))
    }
}

/// The bytes of `data`, inflated when it is gzip (at most `InputLimits.maximumDecompressedBytes`).
public func gunzipIfCompressed(_ data: Data, name: String) throws -> [UInt8] {
    guard data.count >= 2, data[data.startIndex] == 0x1F, data[data.startIndex + 1] == 0x8B else { return [UInt8](data) }
    var stream = z_stream()
    guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw DinoError("zlib could not start inflating \(name)")
    }
    defer { inflateEnd(&stream) }
    var output = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    var input = [UInt8](data)
    let status: Int32 = input.withUnsafeMutableBufferPointer { source in
        stream.next_in = source.baseAddress
        stream.avail_in = UInt32(source.count)
        while true {
            let result = chunk.withUnsafeMutableBufferPointer { out -> Int32 in
                stream.next_out = out.baseAddress
                stream.avail_out = UInt32(out.count)
                return inflate(&stream, Z_NO_FLUSH)
            }
            let produced = chunk.count - Int(stream.avail_out)
            guard output.count + produced <= InputLimits.maximumDecompressedBytes else { return Z_MEM_ERROR }
            output.append(contentsOf: chunk[0..<produced])
            if result == Z_STREAM_END { return Z_OK }
            if result != Z_OK || (produced == 0 && stream.avail_in == 0) { return result == Z_OK ? Z_BUF_ERROR : result }
        }
    }
    guard status == Z_OK else {
        throw DinoError(status == Z_MEM_ERROR
                        ? "\(name) inflates to more than \(InputLimits.maximumDecompressedBytes) bytes; it is not an IDX data set"
                        : "\(name) is not a readable gzip file (truncated or corrupt)")
    }
    return output
}

// MARK: - Image folders

/// Every JPEG and PNG under a folder, recursively, in the order of their sorted relative paths.
/// As torchvision's `ImageFolder`, the first-level subfolder is the class when every image sits in one.
public struct ImageFolder: ImageDataset {
    public let root: URL
    public let relativePaths: [String]
    public let classNames: [String]
    let labelValues: [Int]
    /// Files of other image formats found beside the JPEGs and PNGs (by extension, counted), which are
    /// not read: an iPhone's HEIC photos, WebP downloads, TIFF scans.
    public let otherFormats: [String: Int]

    /// Extensions of image formats this reader does not decode, counted so that they can be named.
    public static let otherImageExtensions: Set<String> = ["heic", "heif", "webp", "tif", "tiff", "bmp", "gif", "avif", "jxl", "jp2"]

    /// One sentence naming the files of other formats and what to do, nil when there are none.
    public var otherFormatsNote: String? { Self.note(otherFormats, under: root.path) }

    static func note(_ other: [String: Int], under path: String) -> String? {
        let sorted = other.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        guard let most = sorted.first else { return nil }
        let counts = sorted.map { "\($0.value) .\($0.key)" }.joined(separator: ", ")
        return "\(counts) file(s) under \(path) are not read (dino reads JPEG and PNG): convert them, e.g. with ImageMagick's mogrify -format jpg *.\(most.key)"
    }

    public var count: Int { relativePaths.count }
    public func label(at index: Int) -> Int { labelValues[index] }

    /// Images directly in the folder while others sit in subfolders (empty otherwise): with them the
    /// first level names no class for every image, so the folder has none.
    public var looseImages: [String] {
        let loose = relativePaths.filter { !$0.contains("/") }
        return loose.count < count ? loose : []
    }
    public func name(at index: Int) -> String { relativePaths[index] }

    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DinoError("image folder \(path) does not exist or is not a folder")
        }
        root = URL(fileURLWithPath: path).standardizedFileURL
        guard (try? FileManager.default.contentsOfDirectory(atPath: root.path)) != nil else {
            throw DinoError("cannot list \(path): check its permissions")
        }
        var found: [String] = [], other: [String: Int] = [:]
        for item in Self.files(under: root) {
            let ext = (item as NSString).pathExtension.lowercased()
            if ImageCodec.fileExtensions.contains(ext) { found.append(item) }
            else if Self.otherImageExtensions.contains(ext) { other[ext, default: 0] += 1 }
        }
        found.sort()
        otherFormats = other
        guard !found.isEmpty else {
            throw DinoError("no JPEG or PNG images under \(path) (looked recursively for .jpg, .jpeg, .png)"
                            + (Self.note(other, under: path).map { "; " + $0 } ?? ""))
        }
        relativePaths = found
        let firstLevel = found.map { $0.split(separator: "/").count > 1 ? String($0.split(separator: "/")[0]) : nil }
        if firstLevel.allSatisfy({ $0 != nil }) {
            let names = Array(Set(firstLevel.compactMap { $0 })).sorted()
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
            classNames = names
            labelValues = firstLevel.map { index[$0!]! }
        } else {
            classNames = []
            labelValues = Array(repeating: -1, count: found.count)
        }
    }

    /// The relative paths of the files under `root`, recursively, following symbolic links to folders (as
    /// torchvision's `os.walk(followlinks=True)`: datasets are often linked into place), each real folder
    /// once (a link back up would loop); names starting with "." (files and folders) are left out.
    static func files(under root: URL) -> [String] {
        var found: [String] = []
        var visited: Set<String> = [root.resolvingSymlinksInPath().path]
        func visit(_ folder: URL, _ prefix: String) {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return }
            for name in names where !name.hasPrefix(".") {
                let url = folder.appendingPathComponent(name), relative = prefix.isEmpty ? name : prefix + "/" + name
                var isFolder: ObjCBool = false
                guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else { continue }  // a dangling link
                if !isFolder.boolValue { found.append(relative) }
                else if visited.insert(url.resolvingSymlinksInPath().path).inserted { visit(url, relative) }
            }
        }
        visit(root, "")
        return found
    }

    public func url(at index: Int) -> URL { root.appendingPathComponent(relativePaths[index]) }

    public func image(at index: Int, channels: Int, minimumShortSide: Int? = nil) throws -> Image {
        try ImageCodec.decode(contentsOf: url(at: index), channels: channels, minimumShortSide: minimumShortSide)
    }
}

/// A view of some indices of another dataset (a subset, or a validation split).
public struct DatasetSubset: ImageDataset {
    public let base: any ImageDataset
    public let indices: [Int]
    public init(_ base: any ImageDataset, indices: [Int]) { self.base = base; self.indices = indices }
    public var count: Int { indices.count }
    public var classNames: [String] { base.classNames }
    public func label(at index: Int) -> Int { base.label(at: indices[index]) }
    public func name(at index: Int) -> String { base.name(at: indices[index]) }
    public func image(at index: Int, channels: Int, minimumShortSide: Int?) throws -> Image {
        try base.image(at: indices[index], channels: channels, minimumShortSide: minimumShortSide)
    }
}

/// The validation split of labelled training data: every fifth item (0, 5, 10, …) a query, the
/// others the memory bank. The training loop's held-out k-NN and `dino knn --validation` both use it,
/// so settings can be chosen without looking at the test split.
public enum ValidationSplit {
    public static func indices(count: Int) -> (memory: [Int], queries: [Int]) {
        let all = 0..<max(0, count)
        return (all.filter { $0 % 5 != 0 }, all.filter { $0 % 5 == 0 })
    }
}

/// Opens a dataset by name: `fashion-mnist` (split `train`/`test`, from `path` or the Debian folder),
/// or `folder` (an image folder at `path`). A path to an existing folder of images also works as is.
public func openDataset(kind: String, path: String?, split: FashionMNIST.Split = .train) throws -> any ImageDataset {
    switch kind {
    case "fashion-mnist", "fashion_mnist", "fmnist":
        return try FashionMNIST(split: split, folder: path ?? FashionMNIST.defaultFolder)
    case "folder", "image_folder", "imagefolder":
        guard let path else { throw DinoError("dataset 'folder' needs data_path, the folder of images") }
        return try ImageFolder(path: path)
    default:
        throw DinoError("unknown dataset '\(kind)': use fashion-mnist or folder")
    }
}

/// Parses a command-line data argument: `fashion-mnist:train`, `fashion-mnist:test` (optionally
/// `fashion-mnist:test@/path/to/idx`), or a folder path.
public func openDataset(argument: String) throws -> any ImageDataset {
    if argument.hasPrefix("fashion-mnist") {
        var rest = String(argument.dropFirst("fashion-mnist".count))
        var folder: String? = nil
        if let at = rest.firstIndex(of: "@") { folder = String(rest[rest.index(after: at)...]); rest = String(rest[..<at]) }
        let split: FashionMNIST.Split = rest == ":test" ? .test : .train
        guard rest.isEmpty || rest == ":train" || rest == ":test" else {
            throw DinoError("'\(argument)': write fashion-mnist:train or fashion-mnist:test")
        }
        return try FashionMNIST(split: split, folder: folder ?? FashionMNIST.defaultFolder)
    }
    return try ImageFolder(path: argument)
}
