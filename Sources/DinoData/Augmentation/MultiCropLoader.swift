import DinoKernels
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One training batch of multi-crop views, views-major as the official `MultiCropWrapper` expects.
public struct TrainingBatch: @unchecked Sendable {
    /// `(2·B, C, G, G)`: global view 1 of every image, then global view 2.
    public let globals: FloatBuffer
    /// `(L·B, C, l, l)`: local view 1 of every image, then local view 2, …
    public let locals: FloatBuffer
    /// Dataset indices of the images (after substituting skipped ones).
    public let indices: [Int]
    /// Images that could not be decoded in this batch (skipped and replaced).
    public let skipped: [String]
}

/// Builds batches for global step s deterministically from (seed, epoch, position): the data order is a
/// seeded shuffle per epoch, and every image's augmentation draws from its own generator, so the
/// batch of a step is the same whatever ran before (resume) and however many workers build it.
/// The next batch is prepared in the background while the current step runs, on `workers` threads at
/// the lowest CPU priority (`BackgroundWorkers`).
///
/// In a data-parallel run of `ranks` processes, `batchSize` is the global batch and rank r builds only
/// its consecutive share, positions `r·B/ranks ..< (r+1)·B/ranks` of each global batch: every image gets
/// the crops it would get in one process.
public final class MultiCropLoader: @unchecked Sendable {
    public let dataset: any ImageDataset
    public let augmenter: MultiCropAugmenter
    public let batchSize: Int
    public let seed: UInt64
    public let onBadImage: BadImagePolicy
    public let workers: Int
    /// This process's share of each global batch: rank `rank` of `ranks`.
    public let rank: Int, ranks: Int
    /// The images of each batch this process builds (`batchSize / ranks`).
    public var localBatchSize: Int { batchSize / ranks }
    /// Full batches per epoch (`drop_last=True`).
    public var iterationsPerEpoch: Int { dataset.count / batchSize }

    private let queue = DispatchQueue(label: "dino.loader")
    private let ready = DispatchSemaphore(value: 0)
    private var inFlight: Int? = nil
    private var prefetched: Result<TrainingBatch, Error>? = nil
    private var orderCache: (epoch: Int, order: [Int])? = nil
    private let orderLock = NSLock()
    private lazy var background = BackgroundWorkers(count: workers)

    public init(dataset: any ImageDataset, augmenter: MultiCropAugmenter, batchSize: Int, seed: UInt64,
                onBadImage: BadImagePolicy, workers: Int, rank: Int = 0, ranks: Int = 1) throws {
        guard dataset.count >= batchSize else {
            throw DinoError("the dataset has \(dataset.count) image\(dataset.count == 1 ? "" : "s"), fewer than one batch of \(batchSize): lower batch_size or add images")
        }
        guard ranks >= 1, rank >= 0, rank < ranks, batchSize % ranks == 0 else {
            throw DinoError("batch_size \(batchSize) must be a multiple of the \(ranks) processes (each takes an equal share of the global batch)")
        }
        self.dataset = dataset; self.augmenter = augmenter; self.batchSize = batchSize; self.seed = seed
        self.onBadImage = onBadImage; self.workers = max(1, workers); self.rank = rank; self.ranks = ranks
    }

    /// The shuffled order of dataset indices in `epoch`.
    public func order(epoch: Int) -> [Int] {
        orderLock.lock(); defer { orderLock.unlock() }
        if let cache = orderCache, cache.epoch == epoch { return cache.order }
        var order = Array(0..<dataset.count)
        var g = RandomGenerator(seed: seed, stream: 0x5EED, index: UInt64(epoch))
        g.shuffle(&order)
        orderCache = (epoch, order)
        return order
    }

    /// Builds the batch of global step `step` (synchronously, on `workers` threads).
    public func batch(step: Int) throws -> TrainingBatch {
        try batch(step: step) { count, body in DispatchQueue.concurrentPerform(iterations: count, execute: body) }
    }

    /// Builds the batch of `step`, `run(count, body)` calling `body(worker)` for each of `count` workers.
    func batch(step: Int, run: (Int, (Int) -> Void) -> Void) throws -> TrainingBatch {
        let s = augmenter.settings, b = localBatchSize, c = s.channels
        let epoch = step / iterationsPerEpoch, position = (step % iterationsPerEpoch) * batchSize + rank * b
        let order = order(epoch: epoch)
        let globals = FloatBuffer(count: 2 * b * c * s.globalSize * s.globalSize)
        let locals = FloatBuffer(count: max(1, s.localCount * b * c * s.localSize * s.localSize))
        let globalStride = c * s.globalSize * s.globalSize, localStride = c * s.localSize * s.localSize
        var outcomes = [(index: Int, skipped: [String], error: Error?)](repeating: (0, [], nil), count: b)
        outcomes.withUnsafeMutableBufferPointer { slots in
            let slots = slots
            run(min(workers, b)) { worker in
                for i in stride(from: worker, to: b, by: min(workers, b)) {
                    var g = RandomGenerator(seed: seed, stream: UInt64(epoch), index: UInt64(position + i))
                    var index = order[position + i]
                    var skipped: [String] = []
                    var image: Image? = nil
                    for attempt in 0..<16 {
                        do {
                            image = try dataset.image(at: index, channels: c, minimumShortSide: s.minimumShortSide)
                            break
                        } catch {
                            if onBadImage == .fail || attempt == 15 {
                                slots[i] = (index, skipped, error); return
                            }
                            skipped.append(dataset.name(at: index))
                            index = (index + 1) % dataset.count
                        }
                    }
                    let views = augmenter.views(of: image!, generator: &g)
                    for v in 0..<2 {
                        (globals.pointer + (v * b + i) * globalStride).update(from: views[v], count: globalStride)
                    }
                    for v in 0..<s.localCount {
                        (locals.pointer + (v * b + i) * localStride).update(from: views[2 + v], count: localStride)
                    }
                    slots[i] = (index, skipped, nil)
                }
            }
        }
        if let failed = outcomes.first(where: { $0.error != nil }) {
            throw DinoError("\(failed.error!) (set on_bad_image: skip to skip unreadable images)")
        }
        return TrainingBatch(globals: globals, locals: locals, indices: outcomes.map(\.index),
                             skipped: outcomes.flatMap(\.skipped))
    }

    /// The batch of `step`, prepared in the background when it was the one prefetched; starts
    /// preparing `step + 1` (when below `limit`) before returning.
    public func next(step: Int, limit: Int) throws -> TrainingBatch {
        var result: Result<TrainingBatch, Error>
        if inFlight == step {
            ready.wait()
            result = prefetched!
            prefetched = nil
        } else {
            if inFlight != nil { ready.wait(); prefetched = nil }
            result = Result { try batch(step: step) }
        }
        inFlight = nil
        if step + 1 < limit {
            inFlight = step + 1
            let background = self.background
            queue.async { [self] in
                prefetched = Result {
                    // `run` returns when every worker is done, so `body` does not outlive the call.
                    try batch(step: step + 1) { count, body in withoutActuallyEscaping(body) { background.run(count: count, $0) } }
                }
                ready.signal()
            }
        }
        return try result.get()
    }

    /// Waits for a prefetch in flight (before the loader is dropped).
    public func drain() {
        if inFlight != nil { ready.wait(); inFlight = nil; prefetched = nil }
    }
}

/// Long-lived threads at the lowest CPU priority (nice 19 on Linux) that build prefetched batches.
/// At normal priority a batch being built preempts one of the training step's two shard threads for a
/// few milliseconds, and the other then waits at the shards' join; at nice 19 the builders take the
/// cores' idle moments (the step's serial parts, its joins) and, should the step catch up with them,
/// the whole machine while it waits for the batch.
final class BackgroundWorkers: @unchecked Sendable {
    /// The state the threads share; they hold it, not the owner, so the owner's deinit can stop them.
    final class Shared: @unchecked Sendable {
        let start: [DispatchSemaphore]
        let done = DispatchSemaphore(value: 0)
        var job: ((Int) -> Void)?
        var stopping = false
        init(count: Int) { start = (0..<count).map { _ in DispatchSemaphore(value: 0) } }
    }

    let count: Int
    private let shared: Shared

    init(count: Int) {
        self.count = max(1, count)
        let shared = Shared(count: self.count)
        self.shared = shared
        for worker in 0..<self.count {
            let thread = Thread {
                #if os(Linux)
                _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)  // this thread only (Linux threads have their own nice)
                #endif
                while true {
                    shared.start[worker].wait()
                    if shared.stopping { return }
                    shared.job?(worker)
                    shared.done.signal()
                }
            }
            thread.name = "dino.loader.\(worker)"
            thread.start()
        }
    }

    /// Runs `body(worker)` for worker 0..<count (at most `self.count`) and returns when all have finished.
    func run(count: Int, _ body: @escaping (Int) -> Void) {
        let n = min(count, self.count)
        shared.job = { worker in if worker < n { body(worker) } }
        for start in shared.start { start.signal() }
        for _ in 0..<self.count { shared.done.wait() }
        shared.job = nil
    }

    deinit {
        shared.stopping = true
        for start in shared.start { start.signal() }
    }
}
