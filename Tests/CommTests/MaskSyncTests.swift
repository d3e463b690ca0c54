import XCTest
@testable import Comm

final class MaskSyncTests: XCTestCase {
    func testPackUnpackRoundTripOddLengths() {
        for n in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 1003] {
            var state: UInt64 = 12345 &+ UInt64(n)
            let mask: [Float] = (0..<n).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return state >> 63 == 1 ? 1 : 0
            }
            var bits = [UInt8](repeating: 0xFF, count: MaskSync.packedByteCount(n))
            mask.withUnsafeBufferPointer { m in
                bits.withUnsafeMutableBufferPointer { MaskSync.pack(m, into: $0) }
            }
            var back = [Float](repeating: 7, count: n)
            bits.withUnsafeBufferPointer { b in
                back.withUnsafeMutableBufferPointer { MaskSync.unpack(b, into: $0) }
            }
            XCTAssertEqual(back, mask, "n = \(n)")
            // Padding bits of the last byte are zero, so packed masks compare by bytes.
            if n % 8 != 0, let last = bits.last {
                XCTAssertEqual(last >> UInt8(n % 8), 0)
            }
        }
    }

    func testPackIsLeastSignificantBitFirst() {
        let mask: [Float] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        var bits = [UInt8](repeating: 0, count: 2)
        mask.withUnsafeBufferPointer { m in bits.withUnsafeMutableBufferPointer { MaskSync.pack(m, into: $0) } }
        XCTAssertEqual(bits, [0b0000_0001, 0b0000_0010])
    }

    func testBroadcastSendsOneBitPerMaskedWeight() throws {
        let segments = [BufferSegment(name: "w1", offset: 0, count: 10, masked: true),
                        BufferSegment(name: "b1", offset: 10, count: 3, masked: false),
                        BufferSegment(name: "w2", offset: 13, count: 17, masked: true)]
        var mask = [Float](repeating: 1, count: 30)
        let comm = SimulatedCommunicator(size: 4)
        let bytes = try mask.withUnsafeMutableBufferPointer {
            try MaskSync.broadcastMask($0, segments: segments, communicator: comm)
        }
        XCTAssertEqual(bytes, 2 + 3)
        XCTAssertTrue(comm.calls.contains("broadcast(5)"))
    }

    func testAgreementPassesOnOneRank() throws {
        let segments = [BufferSegment(name: "w", offset: 0, count: 4, masked: true)]
        let mask: [Float] = [1, 0, 1, 1]
        try mask.withUnsafeBufferPointer {
            try MaskSync.verifyAgreement($0, segments: segments, what: "mask", maskedOnly: true,
                                         communicator: LocalCommunicator())
        }
    }

    func testBroadcastRejectsMismatchedLayout() {
        let segments = [BufferSegment(name: "w", offset: 0, count: 4, masked: true)]
        var mask = [Float](repeating: 1, count: 5)
        XCTAssertThrowsError(try mask.withUnsafeMutableBufferPointer {
            try MaskSync.broadcastMask($0, segments: segments, communicator: LocalCommunicator())
        })
    }
}
