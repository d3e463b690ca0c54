import CMPI
import Foundation
import Dispatch
import CMPIShim

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `MPI_COMM_WORLD` as a `Communicator`. This value owns MPI's lifetime: its initializer calls
/// `MPI_Init_thread` (asking for `MPI_THREAD_MULTIPLE`, which a gradient reducer's communication
/// thread needs; funneled use otherwise) and `finalize()` or `deinit` calls `MPI_Finalize`. `MPI_ERRORS_RETURN` is installed, so every failed MPI call
/// becomes a thrown `CommError.mpi` carrying `MPI_Error_string` instead of killing the job.
///
/// One per process: MPI cannot be initialized twice, nor again after it was finalized.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Receive buffers of non-blocking allreduces, kept for the next step (same bucket sizes).
    private let stagingBuffers = StagingBuffers()
    private let comm: MPI_Comm
    private var finalized = false
    /// False for a duplicate: it frees its communicator instead of finalizing MPI.
    private let ownsMPI: Bool
    /// The thread level MPI provided.
    private let threadLevel: Int32

    /// True when this process was started by an MPI launcher (`mpirun`, `srun --mpi=pmix`),
    /// judged from the environment the launcher sets.
    public static var isLaunchedByMPI: Bool {
        let names: [String] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"]
        return names.contains { getenv($0) != nil }
    }

    public init() throws {
        var flag: Int32 = 0
        MPI_Finalized(&flag)
        if flag != 0 {
            throw CommError.invalidArgument("MPI was already finalized in this process")
        }
        MPI_Initialized(&flag)
        if flag != 0 {
            throw CommError.invalidArgument(
                "MPI is already initialized: create one MPICommunicator per process")
        }
        var provided: Int32 = 0
        try Self.check(
            MPI_Init_thread(nil, nil, stmpi_thread_multiple(), &provided), "MPI_Init_thread")
        ownsMPI = true
        threadLevel = provided
        comm = stmpi_comm_world()
        try Self.check(
            MPI_Comm_set_errhandler(comm, stmpi_errors_return()), "MPI_Comm_set_errhandler")
        var r: Int32 = 0
        var s: Int32 = 0
        try Self.check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank")
        try Self.check(MPI_Comm_size(comm, &s), "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
    }

    /// A duplicate of `parent`'s communicator.
    private init(duplicating parent: MPICommunicator) throws {
        var dup: MPI_Comm? = stmpi_comm_null()
        try Self.check(MPI_Comm_dup(parent.comm, &dup), "MPI_Comm_dup")
        guard let dup else { throw CommError.invalidArgument("MPI_Comm_dup returned no communicator") }
        comm = dup
        try Self.check(MPI_Comm_set_errhandler(comm, stmpi_errors_return()), "MPI_Comm_set_errhandler")
        rank = parent.rank
        size = parent.size
        ownsMPI = false
        threadLevel = parent.threadLevel
    }

    deinit { finalize() }

    /// Calls `MPI_Finalize` once (a duplicate frees its communicator instead); later calls do
    /// nothing. No collective may follow.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        var done: Int32 = 0
        MPI_Finalized(&done)
        guard done == 0 else { return }
        if ownsMPI {
            MPI_Finalize()
        } else {
            var c: MPI_Comm? = comm
            MPI_Comm_free(&c)
        }
    }

    public func duplicate() throws -> Communicator { try MPICommunicator(duplicating: self) }

    public var allowsConcurrentCalls: Bool { threadLevel == stmpi_thread_multiple() }

    public func barrier() throws {
        try Self.check(MPI_Barrier(comm), "MPI_Barrier")
    }

    public func allreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp, counts: CountCheck
    ) throws {
        if counts == .verify { try verifySameCount(buffer.count, operation: "allreduce") }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        for chunk in Self.chunks(buffer.count) {
            try Self.check(
                MPI_Allreduce(
                    stmpi_in_place(), base + chunk.lowerBound, Int32(chunk.count),
                    Self.datatype(T.commType), Self.mpiOp(op), comm),
                "MPI_Allreduce")
        }
    }

    public func broadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int, counts: CountCheck
    ) throws {
        guard (0..<size).contains(root) else { throw CommError.invalidRoot(root: root, size: size) }
        if counts == .verify { try verifySameCount(buffer.count, operation: "broadcast") }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        for chunk in Self.chunks(buffer.count) {
            try Self.check(
                MPI_Bcast(
                    base + chunk.lowerBound, Int32(chunk.count), Self.datatype(T.commType),
                    Int32(root), comm),
                "MPI_Bcast")
        }
    }

    /// One-way seconds of a `bytes`-byte message between rank 0 and rank `peer`: half the median
    /// round trip of `repeats` blocking send/receive ping-pongs after `warmup` (osu_latency's
    /// method). Ranks other than 0 and `peer` only wait at the closing barrier; every rank gets
    /// rank 0's number.
    public func pingPong(bytes: Int, peer: Int, repeats: Int, warmup: Int = 5) throws -> Double {
        try timePair(bytes: bytes, peer: peer, repeats: repeats, warmup: warmup) { buffer, _, n, type, other in
            if self.rank == 0 {
                try Self.check(MPI_Send(buffer, n, type, other, 7, self.comm), "MPI_Send")
                try Self.check(MPI_Recv(buffer, n, type, other, 7, self.comm, stmpi_status_ignore()), "MPI_Recv")
            } else {
                try Self.check(MPI_Recv(buffer, n, type, other, 7, self.comm, stmpi_status_ignore()), "MPI_Recv")
                try Self.check(MPI_Send(buffer, n, type, other, 7, self.comm), "MPI_Send")
            }
        } / 2
    }

    /// Seconds for rank 0 and rank `peer` to swap `bytes`-byte messages at the same time
    /// (MPI_Sendrecv both ways, osu_bibw's traffic pattern without its window): what a 2-rank
    /// allreduce must move. On a full-duplex network it takes the ping-pong's time; where the
    /// two directions share one resource (a host's CPUs copying for a virtual link) it takes up
    /// to twice as long. Median of `repeats` after `warmup`; every rank gets rank 0's number.
    public func exchange(bytes: Int, peer: Int, repeats: Int, warmup: Int = 5) throws -> Double {
        try timePair(bytes: bytes, peer: peer, repeats: repeats, warmup: warmup) { send, receive, n, type, other in
            try Self.check(
                MPI_Sendrecv(send, n, type, other, 8, receive, n, type, other, 8, self.comm, stmpi_status_ignore()),
                "MPI_Sendrecv")
        }
    }

    /// Median seconds of `body(sendBuffer, receiveBuffer, count, MPI_BYTE type, other rank)` run by
    /// rank 0 and rank `peer` (others wait at the barriers), broadcast from rank 0.
    private func timePair(
        bytes: Int, peer: Int, repeats: Int, warmup: Int,
        _ body: (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int32, MPI_Datatype, Int32) throws -> Void
    ) throws -> Double {
        guard (1..<size).contains(peer) else { throw CommError.invalidRoot(root: peer, size: size) }
        guard bytes >= 0, bytes <= Int(Int32.max), repeats > 0 else {
            throw CommError.invalidArgument("a \(bytes)-byte exchange × \(repeats)")
        }
        let send = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes), alignment: 64)
        let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes), alignment: 64)
        defer { send.deallocate(); receive.deallocate() }
        send.initializeMemory(as: UInt8.self, repeating: 1)
        receive.initializeMemory(as: UInt8.self, repeating: 0)
        let type = Self.datatype(.uint8), n = Int32(bytes)
        let other = Int32(rank == 0 ? peer : 0)
        var times: [Double] = []
        try barrier()
        for k in 0..<(warmup + repeats) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            if rank == 0 || rank == peer { try body(send.baseAddress, receive.baseAddress, n, type, other) }
            if k >= warmup { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
        }
        var result = [times.sorted()[times.count / 2]]
        try broadcast(&result, root: 0)
        return result[0]
    }

    public func startAllreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        guard buffer.count <= Int(Int32.max) else {
            throw CommError.invalidArgument(
                "non-blocking allreduce of \(buffer.count) elements exceeds MPI's 32-bit count")
        }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return CompletedRequest() }
        // Not in place: OpenMPI 4.1's libnbc runs an in-place non-blocking allreduce as a binomial
        // reduce + broadcast at every size (2·log₂N full-buffer steps); into a separate buffer it
        // takes Rabenseifner or ring from 4 ranks and 64 KiB. The result is copied back when the
        // request completes.
        let bytes = buffer.count * MemoryLayout<T>.stride
        let raw = stagingBuffers.take(bytes: bytes)
        let staging = raw.bindMemory(to: T.self)
        let request = MPIRequest { [stagingBuffers] complete in
            if complete { _ = buffer.update(fromContentsOf: UnsafeMutableBufferPointer(rebasing: staging[0..<buffer.count])) }
            stagingBuffers.give(raw)
        }
        do {
            try Self.check(
                MPI_Iallreduce(
                    base, staging.baseAddress, Int32(buffer.count), Self.datatype(T.commType),
                    Self.mpiOp(op), comm, &request.handle),
                "MPI_Iallreduce")
        } catch {
            request.abandon()
            throw error
        }
        return request
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }

    // MARK: - Helpers

    /// Turns an MPI return code into a thrown error with MPI's own description.
    static func check(_ code: Int32, _ function: String) throws {
        guard code != stmpi_success() else { return }
        var text = [CChar](repeating: 0, count: Int(stmpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        let message = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) },
                             as: UTF8.self)
        throw CommError.mpi(function: function, code: code, message: message)
    }

    /// Splits `count` elements into ranges that fit MPI's 32-bit counts.
    static func chunks(_ count: Int) -> [Range<Int>] {
        let step = Int(Int32.max)
        return stride(from: 0, to: count, by: step).map { $0..<Swift.min($0 + step, count) }
    }

    static func datatype(_ type: CommType) -> MPI_Datatype {
        switch type {
        case .float32: return stmpi_type_float()
        case .float64: return stmpi_type_double()
        case .int32: return stmpi_type_int32()
        case .int64: return stmpi_type_int64()
        case .uint8: return stmpi_type_uint8()
        }
    }

    static func mpiOp(_ op: ReduceOp) -> MPI_Op {
        switch op {
        case .sum: return stmpi_op_sum()
        case .max: return stmpi_op_max()
        case .min: return stmpi_op_min()
        }
    }
}

/// A non-blocking MPI operation. Waits in `deinit` if still pending, so a dropped request never
/// leaves MPI writing into memory that was handed back.
/// Buffers lent to operations in flight and taken back when they finish: a training step's
/// buckets have the same sizes every step, so after the first step nothing is allocated.
final class StagingBuffers: @unchecked Sendable {
    private var free: [UnsafeMutableRawBufferPointer] = []
    private let lock = NSLock()

    /// The smallest free buffer of at least `bytes` bytes, or a new one.
    func take(bytes: Int) -> UnsafeMutableRawBufferPointer {
        lock.lock()
        defer { lock.unlock() }
        if let k = free.indices.filter({ free[$0].count >= bytes }).min(by: { free[$0].count < free[$1].count }) {
            return free.remove(at: k)
        }
        return .allocate(byteCount: max(bytes, 1), alignment: 64)
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        lock.lock()
        free.append(buffer)
        lock.unlock()
    }

    deinit { for b in free { b.deallocate() } }
}

/// A non-blocking operation in flight; `finish(true)` runs once when it completes (copying a
/// result into place), `finish(false)` if it never started.
final class MPIRequest: CommRequest {
    var handle: MPI_Request? = stmpi_request_null()
    private var done = false
    private var finish: ((Bool) -> Void)?

    init(finish: ((Bool) -> Void)? = nil) { self.finish = finish }

    func wait() throws {
        guard !done else { return }
        done = true
        defer { complete() }
        try MPICommunicator.check(MPI_Wait(&handle, stmpi_status_ignore()), "MPI_Wait")
    }

    func test() throws -> Bool {
        guard !done else { return true }
        var flag: Int32 = 0
        try MPICommunicator.check(MPI_Test(&handle, &flag, stmpi_status_ignore()), "MPI_Test")
        if flag != 0 {
            done = true
            complete()
        }
        return done
    }

    /// The operation was never started: release what it holds, without a result.
    func abandon() {
        done = true
        finish?(false)
        finish = nil
    }

    private func complete() {
        finish?(true)
        finish = nil
    }

    deinit { try? wait() }
}

/// The world communicator of this process: MPI when started by a launcher, otherwise local.
public func makeWorldCommunicator() throws -> Communicator {
    MPICommunicator.isLaunchedByMPI ? try MPICommunicator() : LocalCommunicator()
}
