import DinoKernels
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Open MPI, loaded at run time: `dino` links nothing of MPI, so a machine without Open MPI runs it as
/// before, and under `mpirun` the library that launched the job (`libmpi.so.40`, Debian's `libopenmpi3`)
/// is opened with `dlopen`. The predefined handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`, …) are Open
/// MPI's global objects (`ompi_mpi_comm_world`, …), found with `dlsym`.
///
/// MPI's default error handler is kept (`MPI_ERRORS_ARE_FATAL`): when a rank dies, `mpirun` ends the
/// others and names the rank.
public final class MPICommunicator: Communicator {
    typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?, Int32,
                                           UnsafeMutablePointer<Int32>) -> Int32
    typealias CommQuery = @convention(c) (OpaquePointer, UnsafeMutablePointer<Int32>) -> Int32
    typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, OpaquePointer, OpaquePointer,
                                          OpaquePointer) -> Int32
    typealias Finalize = @convention(c) () -> Int32

    public let rank: Int
    public let size: Int
    let world, float, double, sumOperation, maxOperation: OpaquePointer
    let allreduce: Allreduce, finalize: Finalize
    /// MPI_IN_PLACE in Open MPI's mpi.h.
    static let inPlace = UnsafeRawPointer(bitPattern: 1)
    /// The most elements one MPI call takes (counts are C ints); larger buffers go in pieces.
    static let largestCall = 1 << 30

    /// True when this process was started by Open MPI's `mpirun` (it sets `OMPI_COMM_WORLD_SIZE`).
    public static var isLaunchedByMPI: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    /// The cores of this machine shared among the processes `mpirun` started on it
    /// (`OMPI_COMM_WORLD_LOCAL_SIZE`): the default thread count of each.
    public static var threadsPerProcess: Int {
        let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
        return max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, local))
    }

    /// Opens the MPI library and initializes MPI (`MPI_THREAD_SERIALIZED`: the training loop's thread
    /// makes every call).
    public init() throws {
        guard let library = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL) ?? dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL) else {
            throw DinoError("this process was started by mpirun, but Open MPI's library (libmpi.so.40) cannot be loaded: install Open MPI (Debian: apt install openmpi-bin), or run dino without mpirun")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let pointer = dlsym(library, name) else {
                throw DinoError("Open MPI's library lacks \(name): dino needs Open MPI 4 (libmpi.so.40)")
            }
            return pointer
        }
        func handle(_ name: String) throws -> OpaquePointer { OpaquePointer(try symbol(name)) }
        let initThread = unsafeBitCast(try symbol("MPI_Init_thread"), to: InitThread.self)
        let commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: CommQuery.self)
        let commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: CommQuery.self)
        allreduce = unsafeBitCast(try symbol("MPI_Allreduce"), to: Allreduce.self)
        finalize = unsafeBitCast(try symbol("MPI_Finalize"), to: Finalize.self)
        world = try handle("ompi_mpi_comm_world"); float = try handle("ompi_mpi_float"); double = try handle("ompi_mpi_double")
        sumOperation = try handle("ompi_mpi_op_sum"); maxOperation = try handle("ompi_mpi_op_max")
        var provided: Int32 = 0
        guard initThread(nil, nil, 2, &provided) == 0 else { throw DinoError("MPI_Init_thread failed") }
        var r: Int32 = 0, s: Int32 = 0
        _ = commRank(world, &r); _ = commSize(world, &s)
        rank = Int(r); size = Int(s)
    }

    private var finalized = false

    /// Ends this process's part in MPI (`MPI_Finalize`): call it once training is over, before the
    /// process exits (a process that exits without it is an abnormal termination to `mpirun`).
    public func finish() {
        guard !finalized else { return }
        finalized = true
        _ = finalize()
    }

    deinit { finish() }

    func reduce(_ values: UnsafeMutableRawPointer, count: Int, elementSize: Int, type: OpaquePointer, operation: OpaquePointer) {
        var done = 0
        while done < count {
            let n = min(Self.largestCall, count - done)
            _ = allreduce(Self.inPlace, values + done * elementSize, Int32(n), type, operation, world)
            done += n
        }
    }

    public func sum(_ values: UnsafeMutablePointer<Float>, count: Int) {
        reduce(UnsafeMutableRawPointer(values), count: count, elementSize: 4, type: float, operation: sumOperation)
    }

    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {
        reduce(UnsafeMutableRawPointer(values), count: count, elementSize: 8, type: double, operation: sumOperation)
    }

    public func maximum(_ values: UnsafeMutablePointer<Double>, count: Int) {
        reduce(UnsafeMutableRawPointer(values), count: count, elementSize: 8, type: double, operation: maxOperation)
    }
}
