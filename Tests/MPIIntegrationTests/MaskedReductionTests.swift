import Comm
import Tensor
import XCTest

/// The packed masked reducer and mask synchronisation on real ranks.
final class MaskedReductionTests: XCTestCase {
    let segments = [
        BufferSegment(name: "conv1.weight", offset: 0, count: 30_000, masked: true),
        BufferSegment(name: "bn1.weight", offset: 30_000, count: 64, masked: false),
        BufferSegment(name: "bn1.bias", offset: 30_064, count: 64, masked: false),
        BufferSegment(name: "layer1.conv.weight", offset: 30_128, count: 90_000, masked: true),
        BufferSegment(name: "dead.weight", offset: 120_128, count: 300, masked: true),
        BufferSegment(name: "fc.weight", offset: 120_428, count: 70_000, masked: true),
        BufferSegment(name: "fc.bias", offset: 190_428, count: 10, masked: false),
    ]
    let total = 190_438

    /// Same on every rank: densities 0.2, 0.05, 0, 1 for the masked layers.
    func sharedMask() -> [Float] {
        var rng = Xoshiro256(seed: 2024)
        var mask = [Float](repeating: 1, count: total)
        for i in 0..<30_000 { mask[i] = rng.nextFloat() < 0.2 ? 1 : 0 }
        for i in 30_128..<120_128 { mask[i] = rng.nextFloat() < 0.05 ? 1 : 0 }
        for i in 120_128..<120_428 { mask[i] = 0 }
        return mask
    }

    func rankGradients(_ rank: Int) -> [Float] {
        var rng = Xoshiro256(seed: 77 &+ UInt64(rank))
        return (0..<total).map { _ in rng.nextFloat() * 2 - 1 }
    }

    func denseReference(_ comm: Communicator, mask: [Float], average: Bool) throws -> [Float] {
        var dense = rankGradients(comm.rank)
        try comm.allreduce(&dense, op: .sum)
        let s = average ? 1 / Float(comm.size) : 1
        return zip(dense, mask).map { $1 != 0 ? $0 * s : 0 }
    }

    func testPackedEqualsDenseAllreduceThenMaskingToTheBit() throws {
        let comm = try World.require()
        let mask = sharedMask()
        for result in [GradientReducer.Result.sum, .average] {
            for cap in [1 << 10, 64 << 10, 16 << 20] {
                let expected = try denseReference(comm, mask: mask, average: result == .average)
                let reducer = try mask.withUnsafeBufferPointer {
                    try GradientReducer(segments: segments, mask: $0, communicator: comm,
                                        result: result, bucketCapBytes: cap,
                                        inPlaceMinElements: 50_000)
                }
                var g = rankGradients(comm.rank)
                try g.withUnsafeMutableBufferPointer { try reducer.reduce(gradients: $0) }
                let masked = zip(g, mask).map { $1 != 0 ? $0 : 0 }
                XCTAssertEqual(masked.map(\.bitPattern), expected.map(\.bitPattern),
                               "result \(result), bucket cap \(cap)")
                let active = Int(mask.reduce(0, +))
                XCTAssertEqual(reducer.bytesPerStep, 4 * active)
                XCTAssertEqual(reducer.bytesReduced, 4 * active)
            }
        }
    }

    func testOverlappedStepMatchesDenseReference() throws {
        let comm = try World.require()
        let mask = sharedMask()
        let expected = try denseReference(comm, mask: mask, average: true)
        let reducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm,
                                bucketCapBytes: 8 << 10, inPlaceMinElements: 50_000)
        }
        var g = rankGradients(comm.rank)
        try g.withUnsafeMutableBufferPointer { grads in
            reducer.beginStep(gradients: grads)
            for i in segments.indices.reversed() { try reducer.segmentReady(i) }
            try reducer.finishStep()
        }
        let masked = zip(g, mask).map { $1 != 0 ? $0 : 0 }
        XCTAssertEqual(masked.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertGreaterThanOrEqual(reducer.buckets.count, 3, "in-place run plus two packed buckets")
    }

    func testMaskBroadcastMakesEveryRankHoldRankZerosMask() throws {
        let comm = try World.require()
        let truth = sharedMask()
        var mask = comm.rank == 0 ? truth : [Float](repeating: comm.rank == 1 ? 0 : 1, count: total)
        let bytes = try mask.withUnsafeMutableBufferPointer {
            try MaskSync.broadcastMask($0, segments: segments, communicator: comm)
        }
        XCTAssertEqual(bytes, [30_000, 90_000, 300, 70_000].map { ($0 + 7) / 8 }.reduce(0, +))
        let maskedRanges = segments.filter(\.masked).map(\.range)
        for r in maskedRanges { XCTAssertEqual(Array(mask[r]), Array(truth[r])) }
        try mask.withUnsafeBufferPointer {
            try MaskSync.verifyAgreement($0, segments: segments, what: "mask", maskedOnly: true,
                                         communicator: comm)
        }
    }

    func testMaskThatDiffersOnOneRankIsAnError() throws {
        let comm = try World.require()
        var mask = sharedMask()
        if comm.rank == comm.size - 1 { mask[30_128 + 17] = 1 - mask[30_128 + 17] }
        XCTAssertThrowsError(try mask.withUnsafeBufferPointer {
            try MaskSync.verifyAgreement($0, segments: segments, what: "mask", maskedOnly: true,
                                         communicator: comm)
        }) { error in
            XCTAssertEqual(error as? CommError,
                           .disagreement(what: "mask", segment: "layer1.conv.weight", segmentsDiffering: 1))
        }
        // Weights that differ in a dense segment are caught too.
        var weights = rankGradients(0)
        if comm.rank == 1 { weights[190_430] += 1 }
        XCTAssertThrowsError(try weights.withUnsafeBufferPointer {
            try MaskSync.verifyAgreement($0, segments: segments, what: "weights", maskedOnly: false,
                                         communicator: comm)
        }) { error in
            XCTAssertTrue("\(error)".contains("weights of segment 'fc.bias'"), "\(error)")
        }
    }
}
