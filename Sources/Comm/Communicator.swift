/// A group of processes that run the same program and exchange buffers collectively.
///
/// Every method is collective: all ranks call it in the same order with the same arguments
/// (other than the buffer contents). Buffers are reduced or broadcast in place.
public protocol Communicator: AnyObject {
    /// This process's index in `0..<size`.
    var rank: Int { get }
    /// Number of processes.
    var size: Int { get }

    /// Blocks until every rank has entered the barrier.
    func barrier() throws

    /// Reduces `buffer` element-wise over all ranks; every rank receives the result.
    func allreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp, counts: CountCheck) throws

    /// Copies `buffer` of rank `root` into `buffer` of every other rank.
    func broadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int, counts: CountCheck) throws

    /// Starts a non-blocking allreduce whose result replaces `buffer` (MPI reduces into a
    /// staging buffer and copies back on completion). `buffer` must stay valid and untouched
    /// until the returned request completes. Counts are not checked (that would block).
    func startAllreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws -> CommRequest

    /// Ends every process of the job with `code`. Used when one rank fails, so no rank hangs.
    func abort(code: Int32) -> Never

    /// A communicator over the same ranks whose collectives never match this one's
    /// (`MPI_Comm_dup`; collective): a second thread may run collectives on it while this
    /// thread runs its own, when `allowsConcurrentCalls`.
    func duplicate() throws -> Communicator

    /// Whether two threads may call collectives at once (on different communicators).
    var allowsConcurrentCalls: Bool { get }
}

/// A collective operation in flight.
public protocol CommRequest: AnyObject {
    /// Blocks until the operation has completed.
    func wait() throws
    /// Returns true once the operation has completed (and drives progress).
    func test() throws -> Bool
}

/// Errors of the communication layer. Each carries a message a user can act on.
public enum CommError: Error, CustomStringConvertible, Equatable {
    /// An MPI call returned an error code.
    case mpi(function: String, code: Int32, message: String)
    /// Ranks passed different element counts to one collective.
    case countMismatch(operation: String, local: Int, minimum: Int, maximum: Int)
    /// A root rank outside `0..<size`.
    case invalidRoot(root: Int, size: Int)
    /// Ranks hold different contents for a named segment (mask or weights).
    case disagreement(what: String, segment: String, segmentsDiffering: Int)
    /// Ranks disagree on the gradient layout (segment names, sizes or active counts).
    case layoutMismatch(String)
    /// A caller passed something the layer cannot use.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .mpi(function, code, message):
            return "\(function) failed (MPI error \(code)): \(message)"
        case let .countMismatch(operation, local, minimum, maximum):
            return "\(operation): ranks passed different element counts "
                + "(this rank \(local), smallest \(minimum), largest \(maximum))"
        case let .invalidRoot(root, size):
            return "broadcast root \(root) is not a rank of this \(size)-rank communicator"
        case let .disagreement(what, segment, n):
            return "ranks disagree on the \(what) of segment '\(segment)'"
                + (n > 1 ? " (and \(n - 1) other segment(s))" : "")
        case let .layoutMismatch(message):
            return "gradient layout differs across ranks: \(message)"
        case let .invalidArgument(message):
            return message
        }
    }
}

extension Communicator {
    /// Allreduce with counts verified across ranks.
    public func allreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws {
        try allreduce(buffer, op: op, counts: .verify)
    }

    /// Broadcast with counts verified across ranks.
    public func broadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws {
        try broadcast(buffer, root: root, counts: .verify)
    }

    /// Allreduce of an array in place.
    public func allreduce<T: CommScalar>(
        _ values: inout [T], op: ReduceOp, counts: CountCheck = .verify
    ) throws {
        try values.withUnsafeMutableBufferPointer { try allreduce($0, op: op, counts: counts) }
    }

    /// Broadcast of an array in place (every rank's array must have the root's length).
    public func broadcast<T: CommScalar>(
        _ values: inout [T], root: Int, counts: CountCheck = .verify
    ) throws {
        try values.withUnsafeMutableBufferPointer { try broadcast($0, root: root, counts: counts) }
    }

    /// Smallest and largest value of `value` over all ranks, in one allreduce.
    ///
    /// Uses `max(~x) = ~min(x)`: bitwise not reverses the order of two's-complement integers.
    public func minMax(_ value: Int64) throws -> (min: Int64, max: Int64) {
        var pair: [Int64] = [value, ~value]
        try allreduce(&pair, op: .max, counts: .trusted)
        return (~pair[1], pair[0])
    }

    /// Element-wise smallest and largest values over all ranks, in one allreduce.
    public func minMax(_ values: [Int64]) throws -> (min: [Int64], max: [Int64]) {
        var both = values + values.map { ~$0 }
        try allreduce(&both, op: .max, counts: .trusted)
        let n = values.count
        return (both[n...].map { ~$0 }, Array(both[..<n]))
    }

    /// Throws `CommError.countMismatch` on every rank unless all ranks pass the same `count`.
    public func verifySameCount(_ count: Int, operation: String) throws {
        guard size > 1 else { return }
        let (lo, hi) = try minMax(Int64(count))
        if lo != hi {
            throw CommError.countMismatch(
                operation: operation, local: count, minimum: Int(lo), maximum: Int(hi))
        }
    }
}

/// An error every rank raises together at the same point (decided by a collective or from
/// state identical on every rank), so one rank reports it and all finish without an abort.
public protocol RaisedOnEveryRank: Error {
    /// The process's exit code (1 unless the error says otherwise).
    var exitCode: Int32 { get }
    /// False for an orderly stop that is reported, not as an error.
    var isError: Bool { get }
}

extension RaisedOnEveryRank {
    public var exitCode: Int32 { 1 }
    public var isError: Bool { true }
}
