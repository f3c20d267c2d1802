/// This package's version and the kernels this machine runs it on, as `dino --version` prints them for bug reports.
public enum DinoVersion {
    /// The package's version (semantic versioning; 0.x while the interface may still change).
    public static let number = "0.1.0"

    /// One line on the kernels this process uses: OpenBLAS's kernel set (from the CPU model or
    /// `OPENBLAS_CORETYPE`), the kernel bfloat16 matmuls run on, and the default thread count, e.g.
    /// "kernels: OpenBLAS Cooperlake, bfloat16 on AVX-512 BF16, 2 threads".
    public static var kernels: String {
        let bfloat16 = GEMM.bfloat16KernelName.map { "bfloat16 on \($0)" } ?? "no bfloat16 (float32 matmuls)"
        return "kernels: OpenBLAS \(Parallel.blasCoreName), \(bfloat16), \(Parallel.threadCount) threads"
    }
}
