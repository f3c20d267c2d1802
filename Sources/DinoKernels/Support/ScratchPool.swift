import Foundation

/// Reusable scratch buffers for kernels that need temporary memory (the GEMM k-split's partial
/// products, attention's per-block transposes), so a training step allocates nothing once warm.
///
/// `take` hands out the smallest cached buffer of at least `count` floats (or allocates one); `give`
/// returns it. Concurrent callers get different buffers. At most `capacity` buffers are kept; when
/// full, a larger returned buffer replaces the smallest. Contents are unspecified on `take`.
public final class ScratchPool: @unchecked Sendable {
    private var cached: [FloatBuffer] = []
    private let lock = NSLock()
    private let capacity: Int

    public init(capacity: Int = 8) { self.capacity = capacity }

    public func take(count: Int) -> FloatBuffer {
        lock.lock(); defer { lock.unlock() }
        // The smallest that fits, so small requests do not take the buffers large ones need.
        var best: Int?
        for (index, buffer) in cached.enumerated() where buffer.count >= count {
            if best == nil || buffer.count < cached[best!].count { best = index }
        }
        if let best { return cached.remove(at: best) }
        return FloatBuffer(count: count)
    }

    public func give(_ buffer: FloatBuffer) {
        lock.lock(); defer { lock.unlock() }
        if cached.count < capacity {
            cached.append(buffer)
        } else if let smallest = cached.indices.min(by: { cached[$0].count < cached[$1].count }),
                  cached[smallest].count < buffer.count {
            cached[smallest] = buffer
        }
    }

    /// The pool shared by this package's kernels.
    public static let shared = ScratchPool()
}
