import Comm
import XCTest

/// The MPI world shared by all integration tests of this process; nil when the tests were not
/// started by mpirun (then every test skips). MPI is finalized when the test bundle finishes.
enum World {
    static let shared: MPICommunicator? = {
        guard MPICommunicator.isLaunchedByMPI else { return nil }
        do {
            let comm = try MPICommunicator()
            XCTestObservationCenter.shared.addTestObserver(FinalizeAtEnd(comm))
            return comm
        } catch {
            fatalError("MPI_Init failed under mpirun: \(error)")
        }
    }()

    /// The world, or an XCTSkip when not launched by mpirun with at least 2 ranks.
    static func require() throws -> MPICommunicator {
        guard let comm = shared, comm.size >= 2 else {
            throw XCTSkip("needs mpirun -np 2 or more (launch/test.sh runs it)")
        }
        return comm
    }
}

private final class FinalizeAtEnd: NSObject, XCTestObservation {
    let comm: MPICommunicator
    init(_ comm: MPICommunicator) { self.comm = comm }
    func testBundleDidFinish(_ testBundle: Bundle) { comm.finalize() }
}
