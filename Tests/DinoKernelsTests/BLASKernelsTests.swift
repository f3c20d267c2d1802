import DinoKernels
import XCTest

/// The kernel set `dino` asks OpenBLAS for when OpenBLAS did not recognize the CPU.
final class BLASKernelsTests: XCTestCase {
    func testReplacementOnlyForTheSSE3FallbackWithTheVariableUnset() {
        XCTAssertEqual(BLASKernels.replacement(loaded: "Prescott", variableSet: false, vectorLevel: 2, bfloat16: true), "Cooperlake")
        XCTAssertEqual(BLASKernels.replacement(loaded: "Prescott", variableSet: false, vectorLevel: 2, bfloat16: false), "SkylakeX")
        XCTAssertEqual(BLASKernels.replacement(loaded: "Prescott", variableSet: false, vectorLevel: 1, bfloat16: false), "Haswell")
        XCTAssertNil(BLASKernels.replacement(loaded: "Prescott", variableSet: false, vectorLevel: 0, bfloat16: false),
                     "a CPU without AVX2 keeps the SSE3 kernels")
        XCTAssertNil(BLASKernels.replacement(loaded: "Prescott", variableSet: true, vectorLevel: 2, bfloat16: true),
                     "a set OPENBLAS_CORETYPE is the user's choice")
        for loaded in ["Haswell", "SkylakeX", "Cooperlake", "Zen", "SapphireRapids"] {
            XCTAssertNil(BLASKernels.replacement(loaded: loaded, variableSet: false, vectorLevel: 2, bfloat16: true),
                         "OpenBLAS recognized the CPU: \(loaded) stays")
        }
    }
}
