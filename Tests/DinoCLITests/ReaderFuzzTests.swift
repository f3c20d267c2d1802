import DinoData
import DinoEval
import DinoKernels
import Foundation
import FuzzTargets
import XCTest

/// The suite's short, deterministic fuzz pass: every committed seed of every reader, then a few thousand
/// seeded mutations of them (`Tests/Fuzz/fuzz.sh` runs libFuzzer for the long runs). A reader that
/// crashes fails the whole test process; one that throws anything but `DinoError` traps in `run`.
final class ReaderFuzzTests: XCTestCase {
    static let mutationsPerTarget = 3000

    func testEverySeedIsReadOrRefused() {
        for target in ReaderTarget.allCases {
            let seeds = SeedCorpus.files(of: target)
            XCTAssertFalse(seeds.isEmpty, "no seed corpus for \(target.rawValue) in Tests/Fuzz/Corpus")
            for url in seeds { target.run(try! Data(contentsOf: url)) }
        }
    }

    func testMutatedInputsAreReadOrRefused() {
        for (index, target) in ReaderTarget.allCases.enumerated() {
            // Mutations start from the valid seeds; the regression inputs are replayed as they are (above).
            let seeds = SeedCorpus.files(of: target).filter { !$0.lastPathComponent.hasPrefix("regression-") }
                .map { try! Data(contentsOf: $0) }
            guard !seeds.isEmpty else { XCTFail("no seeds for \(target.rawValue)"); continue }
            var mutator = Mutator(seed: UInt64(index + 1))
            let started = Date()
            for i in 0..<Self.mutationsPerTarget {
                let input = mutator.mutate(seeds[i % seeds.count])
                target.run(input)
            }
            print("\(target.rawValue): \(Self.mutationsPerTarget) mutations in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }

    /// The seeds themselves are valid files: the readers accept them (so mutations start inside the formats).
    /// Files named `regression-*` are inputs that once crashed a reader, kept so that they are replayed.
    func testSeedsAreValid() throws {
        func seeds(_ target: ReaderTarget) -> [URL] { SeedCorpus.files(of: target).filter { !$0.lastPathComponent.hasPrefix("regression-") } }
        for url in seeds(.npy) { XCTAssertNoThrow(try DinoEval.Npy.read(Data(contentsOf: url), name: url.path)) }
        for url in seeds(.png) + seeds(.jpeg) {
            XCTAssertNoThrow(try DinoData.ImageCodec.decode(Data(contentsOf: url), channels: 3, name: url.path))
        }
    }
}
