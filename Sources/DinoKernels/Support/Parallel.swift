import COpenBLAS
import Dispatch
import Foundation

/// Work splitting for kernels: contiguous, disjoint index ranges, one per thread.
///
/// Every kernel splits its work so that each output element is written by exactly one range and
/// computed by the same sequence of operations whatever the split. Results are therefore
/// bit-identical on 1 and N threads (ggml's contract). Reductions that would cross ranges (bias
/// and LayerNorm weight gradients) are split over columns instead of rows for this reason.
public enum Parallel {
    nonisolated(unsafe) private static var storedThreadCount: Int = {
        openblas_set_num_threads(1)  // GEMM splits its own tiles over our threads (see GEMM)
        return defaultThreadCount()
    }()

    /// The number of threads kernels (GEMM included) split their work over.
    public static var threadCount: Int { storedThreadCount }

    /// Sets the thread count for every kernel. OpenBLAS itself stays single-threaded.
    public static func setThreadCount(_ count: Int) {
        _ = storedThreadCount
        storedThreadCount = max(1, count)
    }

    static func defaultThreadCount() -> Int {
        if let text = ProcessInfo.processInfo.environment["DINO_THREADS"], let n = Int(text), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Calls `body` on disjoint ranges covering `0..<count`, concurrently when worthwhile.
    /// - Parameter grain: the smallest number of indices worth a thread of its own.
    @inline(__always)
    public static func forEachRange(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let chunks = min(threadCount, max(1, count / max(1, grain)))
        if chunks <= 1 { body(0..<count); return }
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let start = count * chunk / chunks
            let end = count * (chunk + 1) / chunks
            if start < end { body(start..<end) }
        }
    }
}
