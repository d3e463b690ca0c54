import Comm

/// A one-process stand-in for `size` ranks that all hold the same data: a sum is `size × x`,
/// max and min are `x`. Lets the reducer's averaging be tested without mpirun.
final class SimulatedCommunicator: Communicator {
    let size: Int
    var rank: Int { 0 }
    private(set) var calls: [String] = []

    init(size: Int) { self.size = size }

    func barrier() throws { calls.append("barrier") }

    func allreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp, counts: CountCheck
    ) throws {
        calls.append("allreduce(\(buffer.count))")
        guard op == .sum else { return }
        if let f = buffer as? UnsafeMutableBufferPointer<Float> {
            for i in f.indices { f[i] *= Float(size) }
        } else if let d = buffer as? UnsafeMutableBufferPointer<Double> {
            for i in d.indices { d[i] *= Double(size) }
        }
    }

    func broadcast<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int, counts: CountCheck
    ) throws {
        guard (0..<size).contains(root) else { throw CommError.invalidRoot(root: root, size: size) }
        calls.append("broadcast(\(buffer.count))")
    }

    func startAllreduce<T: CommScalar>(
        _ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp
    ) throws -> CommRequest {
        try allreduce(buffer, op: op, counts: .trusted)
        calls[calls.count - 1] = "start(\(buffer.count))"
        return Done()
    }

    func abort(code: Int32) -> Never { fatalError("abort \(code)") }

    func duplicate() throws -> Communicator { SimulatedCommunicator(size: size) }

    var allowsConcurrentCalls: Bool { true }

    private final class Done: CommRequest {
        func wait() throws {}
        func test() throws -> Bool { true }
    }
}
