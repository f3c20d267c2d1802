import DinoKernels
import DinoModel
import Foundation
import XCTest

/// The folder of committed goldens (Tests/Goldens), found from this file's path.
public let goldensFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Goldens")

/// The tiny model of the model, masked-patch and training goldens (`make_goldens.py`,
/// `make_training_goldens.py`): 16 px RGB, patch 4, width 32, 2 blocks of 4 heads, a 48/16/40 head.
public enum GoldenModel {
    public static let vit = ViTConfig(arch: "custom", imageSize: 16, patchSize: 4, inChannels: 3, embedDim: 32, depth: 2,
                                      numHeads: 4)
    public static func head(normLastLayer: Bool) -> HeadConfig {
        HeadConfig(inDim: 32, outDim: 40, hiddenDim: 48, bottleneckDim: 16, layerCount: 3, normLastLayer: normLastLayer)
    }
}

/// Reads a golden file, failing with the command that regenerates it.
public func loadGolden(_ name: String) throws -> SafeTensors.File {
    let url = goldensFolder.appendingPathComponent(name)
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw DinoError("missing golden \(url.path): run `python3 make_goldens.py` in Tests/Goldens (torch 2.13.0+cpu)")
    }
    return try SafeTensors.read(url)
}

extension SafeTensors.File {
    public func values(_ name: String, file: StaticString = #filePath, line: UInt = #line) -> [Float] {
        guard let t = tensor(name) else { XCTFail("golden has no tensor \(name)", file: file, line: line); return [] }
        return t.values
    }
}

/// The result of comparing a tensor against a reference.
public struct Comparison: CustomStringConvertible {
    public let maxAbsoluteError: Double
    public let referenceScale: Double
    public let worstIndex: Int
    public let tolerance: Double
    /// Error relative to the reference's largest magnitude: max|a − b| / max|b|.
    public var relativeError: Double { maxAbsoluteError / max(referenceScale, 1e-30) }
    public var shareOfTolerance: Double { relativeError / tolerance }
    public var description: String {
        String(format: "max abs err %.3g at %d, rel err %.3g (scale %.3g), %.1f%% of tolerance %.0e",
               maxAbsoluteError, worstIndex, relativeError, referenceScale, 100 * shareOfTolerance, tolerance)
    }
}

/// Compares `actual` to `expected` with a tolerance relative to the reference's scale
/// (max|a − b| ≤ tolerance · max|b|); reports max error, worst index and the share of tolerance used.
@discardableResult
public func assertClose<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ actual: [A], _ expected: [B], tolerance: Double, _ label: String = "",
    file: StaticString = #filePath, line: UInt = #line
) -> Comparison {
    XCTAssertEqual(actual.count, expected.count, "\(label): sizes differ", file: file, line: line)
    var worst = 0.0, worstIndex = 0, scale = 0.0
    for i in 0..<min(actual.count, expected.count) {
        let e = Double(expected[i]), d = abs(Double(actual[i]) - e)
        scale = max(scale, abs(e))
        if d > worst || d.isNaN { worst = d; worstIndex = i }
    }
    let result = Comparison(maxAbsoluteError: worst, referenceScale: scale, worstIndex: worstIndex, tolerance: tolerance)
    if ProcessInfo.processInfo.environment["DINO_REPORT"] != nil { print("[compare] \(label): \(result)") }
    XCTAssertTrue(result.relativeError <= tolerance && !worst.isNaN, "\(label): \(result)", file: file, line: line)
    return result
}

/// Random values in [−scale, scale).
public func randomArray(_ count: Int, seed: UInt64, scale: Double = 1) -> [Double] {
    var g = RandomGenerator(seed: seed)
    return (0..<count).map { _ in g.uniform(-scale, scale) }
}

/// Checks an analytic gradient against central finite differences of `loss` in Double.
/// The caller reduces outputs with a fixed random projection (Σ out ⊙ R), never a plain sum.
public func checkGradient(_ input: [Double], analytic: [Double], samples: Int = 40, step: Double = 1e-6,
                          tolerance: Double = 1e-6, _ label: String,
                          file: StaticString = #filePath, line: UInt = #line, loss: ([Double]) -> Double) {
    var generator = RandomGenerator(seed: 99)
    let indices = input.count <= samples ? Array(0..<input.count) : (0..<samples).map { _ in generator.nextInt(below: input.count) }
    var numeric: [Double] = [], picked: [Double] = []
    for i in indices {
        var plus = input, minus = input
        plus[i] += step; minus[i] -= step
        numeric.append((loss(plus) - loss(minus)) / (2 * step))
        picked.append(analytic[i])
    }
    assertClose(picked, numeric, tolerance: tolerance, "finite differences: \(label)", file: file, line: line)
    XCTAssertGreaterThan(numeric.map(abs).max() ?? 0, 1e-8, "\(label): gradient is identically zero", file: file, line: line)
}

public func projection(_ values: [Double], _ weights: [Double]) -> Double { zip(values, weights).reduce(0) { $0 + $1.0 * $1.1 } }

public func floats(_ x: [Double]) -> [Float] { x.map { Float($0) } }
public func doubles(_ x: [Float]) -> [Double] { x.map { Double($0) } }

nonisolated(unsafe) private var keptAlive: [FloatBuffer] = []

/// A Float copy of `values` that stays allocated for the whole test process: a kernel argument
/// written as `FloatBuffer(x).pointer` would be freed before the kernel runs.
public func input(_ values: [Double]) -> UnsafeMutablePointer<Float> { input(floats(values)) }

public func input(_ values: [Float]) -> UnsafeMutablePointer<Float> {
    let buffer = FloatBuffer(values)
    keptAlive.append(buffer)
    return buffer.pointer
}

/// The folder of committed image fixtures (Tests/Fixtures).
public let fixturesFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

/// A fresh temporary folder, removed when the test process ends is not guaranteed: tests clean up.
public func temporaryFolder(_ name: String = #function) -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("dino-tests-\(getpid())-\(name.filter { $0.isLetter || $0.isNumber })-\(UInt32.random(in: 0...UInt32.max))")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Keeps a test's buffer allocated for the whole test process. Swift may end an object's lifetime
/// right after its last use, and handing `buffer.pointer` to a kernel is not a use of `buffer`.
@discardableResult
public func kept(_ buffer: FloatBuffer) -> FloatBuffer {
    keptAlive.append(buffer)
    return buffer
}
