import Foundation

/// A thread that owns a communicator and runs blocking sum-allreduces on it, one at a time, in
/// the order they were handed over — the same order on every rank, so they match. The training
/// thread hands a bucket over as soon as its gradients are final and goes on with backward; the
/// reduction progresses on this thread meanwhile (OpenMPI's non-blocking collectives would only
/// progress inside MPI calls), and with blocking calls OpenMPI picks its tuned algorithm
/// (Rabenseifner for large buckets) instead of libnbc's binomial tree for in-place buffers.
final class ReductionThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [UnsafeMutableBufferPointer<Float>] = []
    private var handedOver = 0
    private var completed = 0
    private var failure: Error?
    private var stopping = false
    private let communicator: Communicator

    init(communicator: Communicator) {
        self.communicator = communicator
        let thread = Thread { [self] in loop() }
        thread.name = "sparsetrain-reduction"
        thread.start()
    }

    /// Queues a reduction of `region` (left untouched by the caller until `waitForAll()`).
    func reduce(_ region: UnsafeMutableBufferPointer<Float>) {
        condition.lock()
        queue.append(region)
        handedOver += 1
        condition.signal()
        condition.unlock()
    }

    /// Blocks until every region handed over is reduced; rethrows the first failure.
    func waitForAll() throws {
        condition.lock()
        while completed < handedOver && failure == nil { condition.wait() }
        let error = failure
        condition.unlock()
        if let error { throw error }
    }

    /// Ends the thread once its queue is empty.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty {
                condition.unlock()
                return
            }
            let region = queue.removeFirst()
            let failed = failure != nil
            condition.unlock()
            var error: Error?
            if !failed {
                do { try communicator.allreduce(region, op: .sum, counts: .trusted) } catch let e { error = e }
            }
            condition.lock()
            if let error, failure == nil { failure = error }
            completed += 1
            condition.broadcast()
            condition.unlock()
        }
    }
}

/// Whether the training step reduces its buckets on a communication thread.
public enum CommunicationThreadMode: String, Sendable, CaseIterable {
    /// When MPI allows concurrent calls and every rank has a core to spare for it (cores of the
    /// node / ranks on the node > compute threads per rank).
    case auto
    case on
    case off
}

/// Ranks of this job on this node, as the launcher says (OpenMPI, Slurm, MPICH); 1 when unknown.
public func ranksOnThisNode() -> Int {
    let env = ProcessInfo.processInfo.environment
    for key in ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"] {
        if let value = env[key].flatMap({ Int($0.prefix { $0.isNumber }) }), value > 0 { return value }
    }
    return 1
}

/// Whether a rank running `threads` compute threads leaves a core of this node free.
public func nodeHasSpareCore(threadsPerRank threads: Int) -> Bool {
    ProcessInfo.processInfo.activeProcessorCount / ranksOnThisNode() > threads
}
