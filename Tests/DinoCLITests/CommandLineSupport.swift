import DinoData
import DinoKernels
import DinoModel
import Foundation
import XCTest

/// What a finished `dino` process left: its exit status (or the signal that ended it) and its output.
struct ProcessResult {
    var status: Int32
    /// The signal that ended the process (a crash, or our kill), or nil when it exited.
    var signal: Int32?
    var stdout: String
    var stderr: String
    var stderrLines: [Substring] { stderr.split(separator: "\n") }
}

/// The `dino` executable of this build: beside the test bundle (`swift test` builds both into the same
/// folder), or `DINO_EXECUTABLE`.
let dinoExecutable: URL = {
    if let path = ProcessInfo.processInfo.environment["DINO_EXECUTABLE"] { return URL(fileURLWithPath: path) }
    let testBinary = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                         ?? CommandLine.arguments[0])
    var folder = testBinary.deletingLastPathComponent()
    // On Linux the tests run from `<build>/dinoPackageTests.xctest`; elsewhere from inside a bundle.
    while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("dino").path) && folder.path != "/" {
        folder = folder.deletingLastPathComponent()
    }
    return folder.appendingPathComponent("dino")
}()

/// Runs `dino ARGUMENTS` in `directory` and waits at most `timeout` seconds (then kills it and fails).
/// With `shellPrefix`, runs `sh -c 'PREFIX; exec dino ...'` (e.g. `ulimit -f 64`); with `launcher`,
/// runs `LAUNCHER... dino ...` (e.g. setpriv to drop root).
@discardableResult
func runDino(_ arguments: [String], in directory: URL? = nil, timeout: Double = 300, shellPrefix: String? = nil,
             launcher: [String] = [], file: StaticString = #filePath, line: UInt = #line) -> ProcessResult {
    let process = startDino(arguments, in: directory, shellPrefix: shellPrefix, launcher: launcher)
    let deadline = Date().addingTimeInterval(timeout)
    while process.process.isRunning && Date() < deadline { usleep(20_000) }
    if process.process.isRunning {
        kill(process.process.processIdentifier, SIGKILL)
        XCTFail("dino \(arguments.joined(separator: " ")) ran past \(timeout) s", file: file, line: line)
    }
    return process.finish()
}

/// A `dino` process that is running, with its output going to files.
final class RunningDino {
    let process = Process()
    let stdoutURL: URL, stderrURL: URL

    init(stdoutURL: URL, stderrURL: URL) { self.stdoutURL = stdoutURL; self.stderrURL = stderrURL }

    /// Waits for the end and collects the output.
    func finish() -> ProcessResult {
        process.waitUntilExit()
        let out = (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
        let signaled = process.terminationReason == .uncaughtSignal
        return ProcessResult(status: process.terminationStatus, signal: signaled ? process.terminationStatus : nil,
                             stdout: out, stderr: err)
    }
}

func startDino(_ arguments: [String], in directory: URL? = nil, shellPrefix: String? = nil, launcher: [String] = []) -> RunningDino {
    let id = UUID().uuidString
    let running = RunningDino(stdoutURL: URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dino-\(id).out"),
                              stderrURL: URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dino-\(id).err"))
    _ = FileManager.default.createFile(atPath: running.stdoutURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: running.stderrURL.path, contents: nil)
    let p = running.process
    if let shellPrefix {
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        let quoted = ([dinoExecutable.path] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        p.arguments = ["-c", "\(shellPrefix); exec \(quoted.joined(separator: " "))"]
    } else if let first = launcher.first {
        p.executableURL = URL(fileURLWithPath: first)
        p.arguments = launcher.dropFirst() + [dinoExecutable.path] + arguments
    } else {
        p.executableURL = dinoExecutable
        p.arguments = arguments
    }
    if let directory { p.currentDirectoryURL = directory }
    var environment = ProcessInfo.processInfo.environment
    environment["DINO_THREADS"] = environment["DINO_THREADS"] ?? "2"
    p.environment = environment
    p.standardOutput = FileHandle(forWritingAtPath: running.stdoutURL.path)
    p.standardError = FileHandle(forWritingAtPath: running.stderrURL.path)
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { XCTFail("cannot start \(dinoExecutable.path): \(error); build it with swift build -c release") }
    return running
}

/// Asserts that a run succeeded (exit 0, no error line).
func assertSucceeded(_ result: ProcessResult, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertNil(result.signal, "dino died of signal \(result.signal ?? 0): \(result.stderr)", file: file, line: line)
    XCTAssertEqual(result.status, 0, "dino failed: \(result.stderr)", file: file, line: line)
}

/// Asserts that a run failed the way a user should see it: a non-zero exit (not a signal), exactly one
/// `error:` line on stderr that contains every fragment, and no crash report.
func assertRefused(_ result: ProcessResult, _ fragments: String..., status: Int32? = nil,
                   file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertNil(result.signal, "dino crashed (signal \(result.signal ?? 0)): \(result.stderr)", file: file, line: line)
    XCTAssertNotEqual(result.status, 0, "dino succeeded where it should refuse: \(result.stdout)", file: file, line: line)
    if let status { XCTAssertEqual(result.status, status, "exit status; stderr: \(result.stderr)", file: file, line: line) }
    for marker in ["Fatal error", "Backtrace", "Illegal instruction", "Stack dump", "Current stack trace"] {
        XCTAssertFalse(result.stderr.contains(marker), "a crash report on stderr: \(result.stderr)", file: file, line: line)
    }
    let errors = result.stderrLines.filter { $0.hasPrefix("error: ") }
    XCTAssertEqual(errors.count, 1, "expected one error line, stderr: \(result.stderr)", file: file, line: line)
    XCTAssertEqual(result.stderrLines.last.map(String.init), errors.last.map(String.init),
                   "the error is not the last line: \(result.stderr)", file: file, line: line)
    for fragment in fragments {
        XCTAssertTrue(result.stderr.contains(fragment), "stderr lacks '\(fragment)': \(result.stderr)", file: file, line: line)
    }
}

/// A fresh folder under the temporary directory.
func makeTemporaryFolder(_ name: String = "dino-cli") -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("\(name)-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The files directly in a folder, sorted (empty when it does not exist).
func files(in folder: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
}

/// Small inputs of every kind the tool reads, good and bad, made once per test process.
enum Inputs {
    static let root = makeTemporaryFolder("dino-cli-inputs")

    /// A 2-block, 32-wide RGB backbone, patch 4, trained size 16 (`dino init`).
    static let rgbBackbone: URL = initBackbone("rgb.safetensors", channels: 3)
    /// The same with one input channel.
    static let grayBackbone: URL = initBackbone("gray.safetensors", channels: 1)

    static func initBackbone(_ name: String, channels: Int) -> URL {
        let url = root.appendingPathComponent(name)
        let config = ViTConfig(arch: "custom", imageSize: 16, patchSize: 4, inChannels: channels, embedDim: 32, depth: 2, numHeads: 4)
        try! BackboneCheckpoint.initialized(config: config, mean: channels == 3 ? imageNetMean : [0.5],
                                            std: channels == 3 ? imageNetStd : [0.5], seed: 1).save(to: url)
        return url
    }

    /// A labelled folder: classes `dark/` and `light/`, 8 images each, 20x24 RGB PNG and gray JPEG.
    static let labelledFolder: URL = {
        let folder = root.appendingPathComponent("labelled")
        var generator = RandomGenerator(seed: 7)
        for (c, name) in ["dark", "light"].enumerated() {
            let classFolder = folder.appendingPathComponent(name)
            try! FileManager.default.createDirectory(at: classFolder, withIntermediateDirectories: true)
            for i in 0..<8 {
                let channels = i % 2 == 0 ? 3 : 1
                let pixels = (0..<(20 * 24 * channels)).map { _ in UInt8(c * 128 + Int(generator.nextFloat() * 120)) }
                let image = Image(width: 24, height: 20, channels: channels, pixels: pixels)
                let data = i % 2 == 0 ? try! ImageCodec.encodePNG(image) : try! ImageCodec.encodeJPEG(image)
                try! data.write(to: classFolder.appendingPathComponent("\(i).\(i % 2 == 0 ? "png" : "jpg")"))
            }
        }
        return folder
    }()

    /// An RGB PNG photo of 48x40 pixels with a bright square in the middle.
    static let photo: URL = {
        let url = root.appendingPathComponent("photo.png")
        var pixels = [UInt8](repeating: 10, count: 48 * 40 * 3)
        for y in 12..<28 { for x in 16..<32 { for c in 0..<3 { pixels[3 * (y * 48 + x) + c] = 220 } } }
        try! ImageCodec.encodePNG(Image(width: 48, height: 40, channels: 3, pixels: pixels)).write(to: url)
        return url
    }()

    /// Writes `bytes` to `name` under the inputs folder.
    static func file(_ name: String, _ bytes: Data) -> URL {
        let url = root.appendingPathComponent(name)
        try! FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try! bytes.write(to: url)
        return url
    }

    static func bytes(of url: URL) -> Data { try! Data(contentsOf: url) }

    /// The first half of a file's bytes.
    static func truncated(_ url: URL, as name: String) -> URL { file(name, bytes(of: url).prefix(bytes(of: url).count / 2)) }

    /// A file's bytes with a stretch in the middle overwritten by noise.
    static func corrupted(_ url: URL, as name: String) -> URL {
        var data = bytes(of: url)
        var generator = RandomGenerator(seed: 3)
        for i in (data.count / 3)..<min(data.count, data.count / 3 + 64) { data[i] = UInt8(generator.next() & 0xFF) }
        return file(name, data)
    }

    /// A well-formed PNG (correct CRCs) that declares `width`x`height` RGB pixels and holds a few
    /// bytes of data: a decompression bomb when the sizes are large.
    static func pngHeader(width: UInt32, height: UInt32, name: String) -> URL {
        var header = Data()
        for v in [width, height] { withUnsafeBytes(of: v.bigEndian) { header.append(contentsOf: $0) } }
        header.append(contentsOf: [8, 2, 0, 0, 0])
        var data = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        for (type, body) in [("IHDR", header), ("IDAT", Data([0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), ("IEND", Data())] {
            withUnsafeBytes(of: UInt32(body.count).bigEndian) { data.append(contentsOf: $0) }
            let chunk = Data(type.utf8) + body
            data.append(chunk)
            withUnsafeBytes(of: crc32(chunk).bigEndian) { data.append(contentsOf: $0) }
        }
        return file(name, data)
    }

    static func crc32(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
