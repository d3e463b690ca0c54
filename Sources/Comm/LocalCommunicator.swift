/// A communicator of one process: every collective is the identity.
///
/// Lets unit tests and single-process runs use the code paths of distributed runs without
/// `mpirun`, the way an in-process test double stands in for a network.
public final class LocalCommunicator: Communicator {
    public init() {}

    public var rank: Int { 0 }
    public var size: Int { 1 }

    public func barrier() throws {}

    public func allreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp, counts: CountCheck
    ) throws {}

    public func broadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int, counts: CountCheck
    ) throws {
        guard root == 0 else { throw CommError.invalidRoot(root: root, size: 1) }
    }

    public func startAllreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        CompletedRequest()
    }

    public func abort(code: Int32) -> Never {
        exit(code)
    }

    public func duplicate() throws -> Communicator { LocalCommunicator() }

    public var allowsConcurrentCalls: Bool { true }
}

/// A request that completed when it was made.
final class CompletedRequest: CommRequest {
    func wait() throws {}
    func test() throws -> Bool { true }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
