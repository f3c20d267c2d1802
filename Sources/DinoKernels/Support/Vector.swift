/// Small SIMD helpers for the inner loops of kernels that BLAS does not cover.
/// Accumulation order is fixed (8 lanes, then a fixed lane sum), so results do not depend on threads.
@usableFromInline typealias Lanes = SIMD8<Float>

/// Returns Σᵢ a[i]·b[i] for i in 0..<n.
@inlinable @inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 16 <= n {
        acc0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        acc1 += ra.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self)
            * rb.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self)
        i += 16
    }
    while i + 8 <= n {
        acc0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    var sum = (acc0 + acc1).sum()
    while i < n { sum += a[i] * b[i]; i += 1 }
    return sum
}

/// y[i] += alpha·x[i] for i in 0..<n.
@inlinable @inline(__always)
public func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    addScaled(y, UnsafePointer(y), alpha, x, n)  // each element is read before it is written
}

/// out[i] = y[i] + alpha·x[i] for i in 0..<n (`out` may be `y`).
@inlinable @inline(__always)
public func addScaled(_ out: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ alpha: Float,
                      _ x: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y), ro = UnsafeMutableRawPointer(out)
    let a = SIMD8<Float>(repeating: alpha)
    while i + 8 <= n {
        let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            + a * rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        ro.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { out[i] = y[i] + alpha * x[i]; i += 1 }
}

/// Returns the maximum of x[0..<n] (n ≥ 1).
@inlinable @inline(__always)
public func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = x[0]
    for i in 1..<max(n, 1) where x[i] > m { m = x[i] }
    return m
}
