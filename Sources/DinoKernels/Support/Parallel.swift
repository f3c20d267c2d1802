import CDinoKernels
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
    nonisolated(unsafe) private static var pool: WorkerPool?
    private static let poolLock = NSLock()

    /// The number of threads kernels (GEMM included) split their work over.
    public static var threadCount: Int { storedThreadCount }

    /// Sets the thread count for every kernel. OpenBLAS itself stays single-threaded. A worker pool
    /// of another size is retired: its threads exit once idle.
    public static func setThreadCount(_ count: Int) {
        _ = storedThreadCount
        poolLock.lock(); defer { poolLock.unlock() }
        storedThreadCount = max(1, count)
        if let old = pool, old.threadCount != storedThreadCount { old.retire(); pool = nil }
    }

    /// The kernel set OpenBLAS chose when it loaded (`openblas_get_corename`): from the CPU model, e.g.
    /// "Cooperlake" or "SkylakeX" (AVX-512) or "Haswell" (AVX2), or from `OPENBLAS_CORETYPE` when set.
    /// Part of every benchmark record, since it can halve or double GEMM throughput.
    public static var blasCoreName: String { String(cString: openblas_get_corename()) }

    /// Worker threads alive in all pools (the callers, who take part in every job, not counted);
    /// for tests and diagnostics.
    public static var workerThreadsAlive: Int { WorkerPool.alive.load() }

    static func defaultThreadCount() -> Int {
        if let text = ProcessInfo.processInfo.environment["DINO_THREADS"], let n = Int(text), (1...1024).contains(n) { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The persistent workers for `count` threads (the caller is one of them).
    static func workers(for count: Int) -> WorkerPool {
        poolLock.lock(); defer { poolLock.unlock() }
        if let pool, pool.threadCount >= count { return pool }
        let created = WorkerPool(threadCount: max(count, storedThreadCount))
        pool?.retire()  // a caller still running a job on it finishes that job; then its threads exit
        pool = created
        return created
    }

    /// Whether `forEachRange` runs every range inline on the calling thread: inside a batch shard, or
    /// with one thread.
    public static var runsInline: Bool { dino_thread_inside_shard() != 0 || threadCount == 1 }

    /// Calls `body` on disjoint ranges covering `0..<count`, concurrently when worthwhile.
    /// - Parameter grain: the smallest number of indices worth a thread of its own.
    ///
    /// The ranges run on a persistent pool of threads (the caller takes part), not on Dispatch's
    /// shared pool: a step makes thousands of these calls, and waking Dispatch workers for each cost
    /// more than the second core gave on ViT-sized GEMMs. A call made while the pool is busy (from
    /// inside a range, or from another thread such as the data loader's) runs its ranges on Dispatch.
    @inline(__always)
    public static func forEachRange(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        if dino_thread_inside_shard() != 0 { body(0..<count); return }
        let chunks = min(threadCount, max(1, count / max(1, grain)))
        if chunks <= 1 { body(0..<count); return }
        let split = { (chunk: Int) in
            let start = count * chunk / chunks, end = count * (chunk + 1) / chunks
            if start < end { body(start..<end) }
        }
        if !workers(for: chunks).run(chunks: chunks, split) {
            DispatchQueue.concurrentPerform(iterations: chunks, execute: split)
        }
    }
}

extension Parallel {
    /// Runs `body(shard)` for every shard in `0..<count`: the independent parts of a data-parallel
    /// pass (halves of a batch, each with its own activations and gradient buffer).
    ///
    /// With exactly `count` threads each shard runs on a thread of its own and every kernel it calls
    /// runs inline on that thread; otherwise the shards run one after another, each splitting its
    /// kernels over all threads. Either way each shard computes the same operations, so results do
    /// not depend on the thread count. Why: a whole pass per core keeps each core's activations in its
    /// own cache and needs no hand-off between kernels; splitting every kernel of the Fashion-MNIST
    /// recipe's step over 2 cores ran it only 1.4-1.6x faster than 1 core, two half-batch passes
    /// side by side about 10% faster than that.
    public static func forEachShard(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let concurrent = count > 1 && threadCount == count && dino_thread_inside_shard() == 0
        if !concurrent || !workers(for: count).run(chunks: count, { shard in
            dino_thread_set_inside_shard(1)
            body(shard)
            dino_thread_set_inside_shard(0)
        }) {
            for shard in 0..<count { body(shard) }
        }
    }
}

/// N − 1 long-lived threads that, with the calling thread, run the chunks of one job at a time.
/// Chunks are claimed from a shared counter, so which thread runs a chunk varies; kernels make
/// every chunk's result independent of that.
final class WorkerPool: @unchecked Sendable {
    let threadCount: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var job: ((Int) -> Void)?
    private var generation = 0
    private var chunkCount = 0
    private var nextChunk = 0
    private var unfinished = 0
    private var busy = false
    private var retired = false
    /// Worker threads alive across pools.
    static let alive = Counter()

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func add(_ delta: Int) { lock.lock(); value += delta; lock.unlock() }
        func load() -> Int { lock.lock(); defer { lock.unlock() }; return value }
    }

    init(threadCount: Int) {
        self.threadCount = threadCount
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(finished, nil)
        for index in 1..<max(1, threadCount) {
            WorkerPool.alive.add(1)
            let thread = Thread { self.workerLoop() }  // holds the pool until the worker exits
            thread.name = "dino.kernels.\(index)"
            thread.stackSize = 1 << 22
            thread.start()
        }
    }

    deinit {  // every worker has exited (each held the pool) and no caller holds it
        pthread_cond_destroy(wake); pthread_cond_destroy(finished); pthread_mutex_destroy(mutex)
        wake.deallocate(); finished.deallocate(); mutex.deallocate()
    }

    /// Runs `body(0..<chunks)` across the pool and returns true, or returns false at once when the
    /// pool is already running a job (the caller then runs the chunks some other way).
    func run(chunks: Int, _ body: (Int) -> Void) -> Bool {
        pthread_mutex_lock(mutex)
        if busy { pthread_mutex_unlock(mutex); return false }
        busy = true
        return withoutActuallyEscaping(body) { body in
            job = body
            chunkCount = chunks
            nextChunk = 0
            unfinished = chunks
            generation &+= 1
            pthread_cond_broadcast(wake)
            claimChunks()
            while unfinished > 0 { pthread_cond_wait(finished, mutex) }
            job = nil
            busy = false
            pthread_mutex_unlock(mutex)
            return true
        }
    }

    /// With the mutex held: runs chunks until none is left unclaimed.
    private func claimChunks() {
        while nextChunk < chunkCount, let body = job {
            let chunk = nextChunk
            nextChunk += 1
            pthread_mutex_unlock(mutex)
            body(chunk)
            pthread_mutex_lock(mutex)
            unfinished -= 1
            if unfinished == 0 { pthread_cond_signal(finished) }
        }
    }

    /// Lets the workers exit once no job is left (a job already started still gets their help).
    func retire() {
        pthread_mutex_lock(mutex)
        retired = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    private func workerLoop() {
        pthread_mutex_lock(mutex)
        var seen = generation
        while true {
            while generation == seen && !retired { pthread_cond_wait(wake, mutex) }
            if generation == seen { break }  // retired, and no new job
            seen = generation
            claimChunks()
        }
        pthread_mutex_unlock(mutex)
        WorkerPool.alive.add(-1)
    }
}
