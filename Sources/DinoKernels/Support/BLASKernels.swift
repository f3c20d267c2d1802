import CDinoKernels
import Foundation

/// OpenBLAS's kernel set, and the one to ask for when OpenBLAS did not recognize the CPU.
///
/// OpenBLAS picks its kernels from the CPU model when it loads, or from `OPENBLAS_CORETYPE`. A model
/// newer than the library falls back to "Prescott" (SSE3): Debian 12's OpenBLAS 0.3.21 does so on an
/// Emerald Rapids Xeon (model 207), where float32 GEMMs then run at a third of the AVX-512 kernels' rate
/// (Benchmarks/README.md, "AMX tiles"). The choice is made before `main`, so it can only be corrected
/// by starting again with the variable set (`dino` does, once).
public enum BLASKernels {
    /// The kernel set to request through `OPENBLAS_CORETYPE`, or nil to keep the loaded one: only when
    /// the variable is unset (a set one is the user's choice) and OpenBLAS fell back to "Prescott" on a
    /// CPU with AVX2 (`vectorLevel` 1: "Haswell") or AVX-512 (2: "SkylakeX", or "Cooperlake" with
    /// AVX-512 BF16).
    public static func replacement(loaded: String, variableSet: Bool, vectorLevel: Int, bfloat16: Bool) -> String? {
        guard !variableSet, loaded == "Prescott" else { return nil }
        switch vectorLevel {
        case 2...: return bfloat16 ? "Cooperlake" : "SkylakeX"
        case 1: return "Haswell"
        default: return nil
        }
    }

    /// What this CPU runs: 2 for AVX-512 (F, BW, DQ, VL), 1 for AVX2 + FMA, 0 otherwise.
    public static var vectorLevel: Int { Int(dino_cpu_vector_level()) }

    /// `replacement` for this process and CPU.
    public static var replacementForThisMachine: String? {
        replacement(loaded: Parallel.blasCoreName,
                    variableSet: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] != nil,
                    vectorLevel: vectorLevel, bfloat16: dino_gemm_bf16_available() != 0)
    }
}
