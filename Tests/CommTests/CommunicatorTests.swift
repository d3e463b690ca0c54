import XCTest
@testable import Comm
import Tensor

final class CommunicatorTests: XCTestCase {
    func testLocalCollectivesAreIdentity() throws {
        let comm = LocalCommunicator()
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        var f: [Float] = [1, -2, 3.5]
        try comm.allreduce(&f, op: .sum)
        XCTAssertEqual(f, [1, -2, 3.5])
        var i: [Int64] = [7, 8]
        try comm.broadcast(&i, root: 0)
        XCTAssertEqual(i, [7, 8])
        let r = try f.withUnsafeMutableBufferPointer { try comm.startAllreduce($0, op: .max) }
        XCTAssertTrue(try r.test())
        try r.wait()
    }

    func testLocalBroadcastRejectsBadRoot() {
        var x: [UInt8] = [1]
        XCTAssertThrowsError(try LocalCommunicator().broadcast(&x, root: 1)) { error in
            XCTAssertEqual(error as? CommError, .invalidRoot(root: 1, size: 1))
            XCTAssertTrue("\(error)".contains("root 1"))
        }
    }

    func testMinMaxUsesBitwiseNotTrick() throws {
        let comm = LocalCommunicator()
        for v: Int64 in [0, -1, 5, .min, .max] {
            let (lo, hi) = try comm.minMax(v)
            XCTAssertEqual(lo, v)
            XCTAssertEqual(hi, v)
        }
        let (lo, hi) = try comm.minMax([3, -4, .min])
        XCTAssertEqual(lo, [3, -4, .min])
        XCTAssertEqual(hi, [3, -4, .min])
    }

    func testElementTypesMapToDistinctSizes() {
        XCTAssertEqual(Float.commType.byteCount, 4)
        XCTAssertEqual(Double.commType.byteCount, 8)
        XCTAssertEqual(Int32.commType.byteCount, 4)
        XCTAssertEqual(Int64.commType.byteCount, 8)
        XCTAssertEqual(UInt8.commType.byteCount, 1)
    }

    func testChunksCoverLargeCountsInInt32Pieces() {
        let n = Int(Int32.max) * 2 + 5
        let parts = MPICommunicator.chunks(n)
        XCTAssertEqual(parts.count, 3)
        XCTAssertEqual(parts.map(\.count).reduce(0, +), n)
        XCTAssertTrue(parts.allSatisfy { $0.count <= Int(Int32.max) })
        XCTAssertEqual(MPICommunicator.chunks(0), [])
    }

    func testErrorMessagesNameTheProblem() {
        let e = CommError.countMismatch(operation: "allreduce", local: 3, minimum: 3, maximum: 4)
        XCTAssertTrue(e.description.contains("different element counts"))
        let d = CommError.disagreement(what: "mask", segment: "layer1.0.conv1.weight", segmentsDiffering: 2)
        XCTAssertTrue(d.description.contains("'layer1.0.conv1.weight'"))
        XCTAssertTrue(d.description.contains("1 other"))
    }

    func testChecksumSeesOneBitFlip() {
        var a = (0..<1001).map { Float($0) * 0.25 }
        let h1 = a.withUnsafeBufferPointer { checksum64($0) }
        a[500] = Float(bitPattern: a[500].bitPattern ^ 1)
        let h2 = a.withUnsafeBufferPointer { checksum64($0) }
        XCTAssertNotEqual(h1, h2)
        // Order matters.
        XCTAssertNotEqual(checksum64("ab"), checksum64("ba"))
        // Tail bytes (not a multiple of 8) count.
        XCTAssertNotEqual(checksum64("abcdefghi"), checksum64("abcdefghj"))
    }

    func testTilingValidation() {
        let ok = [BufferSegment(name: "a", offset: 0, count: 3, masked: true),
                  BufferSegment(name: "b", offset: 3, count: 2, masked: false)]
        XCTAssertNoThrow(try ok.validateTiling(total: 5))
        XCTAssertThrowsError(try ok.validateTiling(total: 6))
        let gap = [BufferSegment(name: "a", offset: 0, count: 3, masked: true),
                   BufferSegment(name: "b", offset: 4, count: 2, masked: false)]
        XCTAssertThrowsError(try gap.validateTiling(total: 6)) { error in
            XCTAssertTrue("\(error)".contains("'b'"))
        }
    }
}
