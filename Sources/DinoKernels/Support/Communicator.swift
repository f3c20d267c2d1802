/// The processes of a data-parallel run and the collective operations a training step needs (the
/// subset of MPI's that DINO uses). A process alone is `SingleProcess`; under `mpirun`, the
/// `DinoDistributed` module's `MPICommunicator`. Every rank must make the same calls in the same order.
public protocol Communicator: AnyObject {
    /// This process's index, 0..<size; rank 0 writes the run's files.
    var rank: Int { get }
    /// The number of processes.
    var size: Int { get }
    /// values ← Σ over ranks of values, in place.
    func sum(_ values: UnsafeMutablePointer<Float>, count: Int)
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int)
    /// values ← max over ranks of values, in place.
    func maximum(_ values: UnsafeMutablePointer<Double>, count: Int)
}

extension Communicator {
    public var isPrimary: Bool { rank == 0 }

    /// The sum over ranks of one value.
    public func sum(_ value: Double) -> Double {
        var x = value
        sum(&x, count: 1)
        return x
    }

    /// The maximum over ranks of one value.
    public func maximum(_ value: Double) -> Double {
        var x = value
        maximum(&x, count: 1)
        return x
    }
}

/// One process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func sum(_ values: UnsafeMutablePointer<Float>, count: Int) {}
    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {}
    public func maximum(_ values: UnsafeMutablePointer<Double>, count: Int) {}
}
