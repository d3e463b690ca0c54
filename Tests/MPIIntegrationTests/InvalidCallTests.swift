import Comm
import XCTest

/// Invalid calls become Swift errors on every rank — never a crash or a hang.
final class InvalidCallTests: XCTestCase {
    func testBadRootThrowsOnEveryRank() throws {
        let comm = try World.require()
        var x: [Float] = [1, 2]
        for root in [-1, comm.size, 99] {
            XCTAssertThrowsError(try comm.broadcast(&x, root: root)) { error in
                XCTAssertEqual(error as? CommError, .invalidRoot(root: root, size: comm.size))
            }
        }
        // The communicator still works afterwards.
        try comm.allreduce(&x, op: .max)
        XCTAssertEqual(x, [1, 2])
    }

    func testMismatchedLengthsThrowOnEveryRank() throws {
        let comm = try World.require()
        var x = [Float](repeating: 1, count: 10 + comm.rank)
        XCTAssertThrowsError(try comm.allreduce(&x, op: .sum)) { error in
            guard case let .countMismatch(operation, local, minimum, maximum)? = error as? CommError
            else { return XCTFail("unexpected \(error)") }
            XCTAssertEqual(operation, "allreduce")
            XCTAssertEqual(local, 10 + comm.rank)
            XCTAssertEqual(minimum, 10)
            XCTAssertEqual(maximum, 10 + comm.size - 1)
        }
        XCTAssertEqual(x, [Float](repeating: 1, count: 10 + comm.rank), "buffer left untouched")
        XCTAssertThrowsError(try comm.broadcast(&x, root: 0)) { error in
            XCTAssertTrue("\(error)".contains("broadcast: ranks passed different element counts"))
        }
        // Still usable.
        var ok: [Int32] = [1]
        try comm.allreduce(&ok, op: .sum)
        XCTAssertEqual(ok, [Int32(comm.size)])
    }

    func testReducerLayoutMismatchIsReportedWithTheSegmentName() throws {
        let comm = try World.require()
        // Rank 0's mask of "b" has one more active entry than the other ranks' masks.
        let segments = [BufferSegment(name: "a", offset: 0, count: 8, masked: true),
                        BufferSegment(name: "b", offset: 8, count: 8, masked: true)]
        var mask = [Float](repeating: 1, count: 16)
        mask[9] = 0
        mask[10] = comm.rank == 0 ? 1 : 0
        XCTAssertThrowsError(try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm)
        }) { error in
            guard case .layoutMismatch(let message)? = error as? CommError
            else { return XCTFail("unexpected \(error)") }
            XCTAssertTrue(message.contains("'b'"), message)
        }
    }
}
