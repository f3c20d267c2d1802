import Foundation
import XCTest

/// The README's library example, built as another project builds it: a package that depends on a tagged
/// clone of this repository by version (which SwiftPM refuses while a target passes unsafe flags), then
/// run on a folder of images.
final class LibraryExampleTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @discardableResult
    func shell(_ command: String, in folder: URL, timeout: Double = 900) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command + " 2>&1"]
        process.currentDirectoryURL = folder
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "shell", code: Int(process.terminationStatus), userInfo: [NSLocalizedDescriptionKey: "\(command): \(text.suffix(3000))"])
        }
        return text
    }

    func testTheReadmeExampleBuildsAgainstATaggedCloneAndRuns() throws {
        // The README shows exactly the example's source.
        let source = try String(contentsOf: Self.root.appendingPathComponent("Examples/extract-features/Sources/main.swift"), encoding: .utf8)
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(readme.contains("```swift\n" + source + "```"), "README's library example differs from Examples/extract-features/Sources/main.swift")

        // A repository of this tree (what is committed, and what is changed but not yet committed), tagged 1.0.0.
        let work = makeTemporaryFolder("dino-example")
        defer { try? FileManager.default.removeItem(at: work) }
        let clone = work.appendingPathComponent("dino")
        try FileManager.default.createDirectory(at: clone, withIntermediateDirectories: true)
        try shell("git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t '\(clone.path)'", in: Self.root)
        try shell("git init -q && git add -A && git -c user.name=test -c user.email=test@localhost commit -q -m tree && git tag 1.0.0", in: clone)

        // The example package, depending on it by version.
        let example = work.appendingPathComponent("example")
        try FileManager.default.createDirectory(at: example.appendingPathComponent("Sources"), withIntermediateDirectories: true)
        let manifest = try String(contentsOf: Self.root.appendingPathComponent("Examples/extract-features/Package.swift"), encoding: .utf8)
            .replacingOccurrences(of: "DINO_REPOSITORY_URL", with: clone.absoluteString)
        try manifest.write(to: example.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        try source.write(to: example.appendingPathComponent("Sources/main.swift"), atomically: true, encoding: .utf8)
        try shell("swift build -c release", in: example)

        let output = try shell(".build/release/extract-features '\(Inputs.rgbBackbone.path)' '\(Inputs.labelledFolder.path)'", in: example)
        XCTAssertTrue(output.contains("16 images, 32-d features"), output)
        XCTAssertTrue(output.contains("attention of dark/0.png: 6x5 patches"), output)
    }
}
