import XCTest
@testable import Comm

final class GradientReducerTests: XCTestCase {
    /// conv (masked, large, 30% active) | bn (dense small) | fc (masked, all active, large)
    /// | fc.bias (dense small) | empty (masked, none active) | big dense
    let segments = [
        BufferSegment(name: "conv.weight", offset: 0, count: 100_000, masked: true),
        BufferSegment(name: "bn.weight", offset: 100_000, count: 16, masked: false),
        BufferSegment(name: "fc.weight", offset: 100_016, count: 70_000, masked: true),
        BufferSegment(name: "fc.bias", offset: 170_016, count: 10, masked: false),
        BufferSegment(name: "empty.weight", offset: 170_026, count: 50, masked: true),
        BufferSegment(name: "dense.table", offset: 170_076, count: 80_000, masked: false),
    ]
    var total: Int { 250_076 }

    func makeMask() -> [Float] {
        var mask = [Float](repeating: 1, count: total)
        var s: UInt64 = 99
        for i in 0..<100_000 {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            mask[i] = (s >> 33) % 10 < 3 ? 1 : 0
        }
        for i in 170_026..<170_076 { mask[i] = 0 }
        return mask
    }

    func makeGradients() -> [Float] {
        (0..<total).map { Float(($0 * 7919) % 1013) * 0.001 - 0.5 }
    }

    func testBucketsRunInReverseOrderAndCountBytes() throws {
        let mask = makeMask()
        let active = Int(mask[0..<100_000].reduce(0, +))
        let reducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: LocalCommunicator(),
                                bucketCapBytes: 1 << 20, inPlaceMinElements: 60_000)
        }
        // The dense table is large and fully active: in place. bn.weight, fc.weight and fc.bias
        // are an adjacent fully active run: one in-place bucket. The empty mask and conv are
        // packed.
        XCTAssertEqual(reducer.buckets.count, 4)
        XCTAssertEqual(reducer.buckets[0].segmentIndices, [5])
        XCTAssertEqual(reducer.buckets[0].transport, .inPlace(170_076..<250_076))
        XCTAssertEqual(reducer.buckets[1].segmentIndices, [4])
        XCTAssertEqual(reducer.buckets[1].elementCount, 0)
        XCTAssertEqual(reducer.buckets[2].segmentIndices, [3, 2, 1])
        XCTAssertEqual(reducer.buckets[2].transport, .inPlace(100_000..<170_026))
        XCTAssertEqual(reducer.buckets[3].segmentIndices, [0])
        XCTAssertEqual(reducer.elementsPerStep, active + 16 + 70_000 + 10 + 80_000)
        XCTAssertEqual(reducer.bytesPerStep, 4 * reducer.elementsPerStep)
        XCTAssertEqual(reducer.packedCount, active)

        var g = makeGradients()
        try g.withUnsafeMutableBufferPointer { try reducer.reduce(gradients: $0) }
        XCTAssertEqual(reducer.bytesReduced, reducer.bytesPerStep)
    }

    /// Built from the mask's active positions (as the mask's owner holds them), the reducer has
    /// the plan it builds by scanning the dense mask, and reduces alike.
    func testPlanFromActivePositionsEqualsThePlanFromTheMask() throws {
        let mask = makeMask()
        let fromMask = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: LocalCommunicator(), inPlaceMinElements: 60_000)
        }
        let positions = segments.map { s in (0..<s.count).filter { mask[s.offset + $0] != 0 }.map { Int32($0) } }
        let fromPositions = try GradientReducer(segments: segments, total: total, activePositions: { positions[$0] },
                                                communicator: LocalCommunicator(), inPlaceMinElements: 60_000)
        XCTAssertEqual(fromPositions.buckets.map(\.segmentIndices), fromMask.buckets.map(\.segmentIndices))
        XCTAssertEqual(fromPositions.buckets.map(\.transport), fromMask.buckets.map(\.transport))
        XCTAssertEqual(fromPositions.packedCount, fromMask.packedCount)
        XCTAssertEqual(fromPositions.bytesPerStep, fromMask.bytesPerStep)
        var a = makeGradients(), b = makeGradients()
        try a.withUnsafeMutableBufferPointer { try fromMask.reduce(gradients: $0) }
        try b.withUnsafeMutableBufferPointer { try fromPositions.reduce(gradients: $0) }
        XCTAssertEqual(a, b)
    }

    func testAverageOverSimulatedRanksScalesActiveEntriesOnly() throws {
        let mask = makeMask()
        let comm = SimulatedCommunicator(size: 4)
        let reducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm, result: .average,
                                bucketCapBytes: 64 << 10, inPlaceMinElements: 60_000)
        }
        let original = makeGradients()
        var g = original
        try g.withUnsafeMutableBufferPointer { try reducer.reduce(gradients: $0) }
        // Every rank holds the same values, so the mean equals them; the sum (4x) then x 1/4 is
        // exact in binary floating point.
        XCTAssertEqual(g, original)

        let sumReducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm, result: .sum,
                                inPlaceMinElements: 60_000)
        }
        g = original
        try g.withUnsafeMutableBufferPointer { try sumReducer.reduce(gradients: $0) }
        for i in 0..<total {
            let expected = mask[i] != 0 ? original[i] * 4 : original[i]
            if g[i] != expected { return XCTFail("entry \(i): \(g[i]) != \(expected)") }
        }
    }

    /// A segment written straight into its packed slot travels as it is: never gathered from
    /// nor scattered into the dense buffer; its reduced values are read from the slot.
    func testBornPackedSegmentIsNeitherGatheredNorScattered() throws {
        let mask = makeMask()
        let comm = SimulatedCommunicator(size: 4)
        let reducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm, result: .sum,
                                bucketCapBytes: 64 << 10, inPlaceMinElements: 60_000)
        }
        XCTAssertNil(reducer.packedSlot(segment: 2), "fully active fc.weight is reduced in place")
        XCTAssertNil(reducer.packedSlot(segment: 4), "nothing active: no slot")
        let slot = try XCTUnwrap(reducer.packedSlot(segment: 0))
        let active = (0..<100_000).filter { mask[$0] != 0 }
        XCTAssertEqual(slot.count, active.count)
        let original = makeGradients()
        var g = original
        try g.withUnsafeMutableBufferPointer { gp in
            reducer.beginStep(gradients: gp)
            for (k, _) in active.enumerated() { slot[k] = Float(k % 97) }
            for i in segments.indices.reversed() { try reducer.segmentReady(i, bornPacked: i == 0) }
            try reducer.finishStep()
        }
        let reduced = try XCTUnwrap(reducer.reducedPackedGradient(segment: 0))
        for k in active.indices where reduced[k] != Float(k % 97) * 4 {
            return XCTFail("packed entry \(k): \(reduced[k])")
        }
        XCTAssertEqual(Array(g[0..<100_000]), Array(original[0..<100_000]), "the dense conv gradient is untouched")
        XCTAssertEqual(g[100_016], original[100_016] * 4, "other segments are reduced as before")
        XCTAssertNil(reducer.reducedPackedGradient(segment: 2))

        // Without overlap every bucket is reduced (blocking) in finishStep: the same result.
        let overlapped = g
        reducer.overlapsBackward = false
        g = original
        try g.withUnsafeMutableBufferPointer { gp in
            reducer.beginStep(gradients: gp)
            for (k, _) in active.enumerated() { slot[k] = Float(k % 97) }
            for i in segments.indices.reversed() { try reducer.segmentReady(i, bornPacked: i == 0) }
            try reducer.finishStep()
        }
        XCTAssertEqual(g, overlapped)
        for k in active.indices where reduced[k] != Float(k % 97) * 4 {
            return XCTFail("packed entry \(k) without overlap: \(reduced[k])")
        }
    }

    func testStepApiStartsBucketsInOrderAsSegmentsBecomeReady() throws {
        let mask = makeMask()
        let comm = SimulatedCommunicator(size: 2)
        let reducer = try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: comm, result: .sum,
                                bucketCapBytes: 1 << 20, inPlaceMinElements: 60_000)
        }
        var g = makeGradients()
        try g.withUnsafeMutableBufferPointer { grads in
            reducer.beginStep(gradients: grads)
            try reducer.segmentReady(5)                  // bucket 0 complete → starts
            XCTAssertEqual(comm.calls.filter { $0.hasPrefix("start") }.count, 1)
            try reducer.segmentReady(3)                  // bucket 2 waits for segments 2 and 1
            try reducer.segmentReady(0)                  // bucket 3 ready, but 1 and 2 are not
            XCTAssertEqual(comm.calls.filter { $0.hasPrefix("start") }.count, 1)
            try reducer.segmentReady(4)                  // bucket 1 (nothing to send) done
            XCTAssertEqual(comm.calls.filter { $0.hasPrefix("start") }.count, 1)
            try reducer.finishStep()                     // starts 2 and 3 in order, waits, scatters
        }
        let starts = comm.calls.filter { $0.hasPrefix("start") }
        XCTAssertEqual(starts, ["start(80000)", "start(70026)", "start(\(reducer.packedCount))"])
    }

    /// With a communication thread the buckets are reduced on the thread's communicator, in
    /// bucket order, as they become ready; the result equals the blocking reduction's.
    func testReductionThreadReducesOnItsOwnCommunicatorInOrder() throws {
        let mask = makeMask()
        let comm = SimulatedCommunicator(size: 3)
        let threadComm = try comm.duplicate() as! SimulatedCommunicator
        func reducer() throws -> GradientReducer {
            try mask.withUnsafeBufferPointer {
                try GradientReducer(segments: segments, mask: $0, communicator: comm, result: .sum,
                                    bucketCapBytes: 1 << 20, inPlaceMinElements: 60_000)
            }
        }
        let threaded = try reducer()
        let callsAtBuild = comm.calls
        threaded.useReductionThread(on: threadComm)
        XCTAssertEqual(threaded.overlap, .thread)
        var g = makeGradients()
        for _ in 0..<3 {   // several steps through one thread
            g = makeGradients()
            try g.withUnsafeMutableBufferPointer { grads in
                threaded.beginStep(gradients: grads)
                for i in segments.indices.reversed() { try threaded.segmentReady(i) }
                try threaded.finishStep()
            }
        }
        XCTAssertEqual(comm.calls, callsAtBuild, "the training thread's communicator makes no call during steps")
        XCTAssertEqual(threadComm.calls, Array(repeating: ["allreduce(80000)", "allreduce(70026)", "allreduce(\(threaded.packedCount))"], count: 3).flatMap { $0 })
        var expected = makeGradients()
        try expected.withUnsafeMutableBufferPointer { try reducer().reduce(gradients: $0) }
        XCTAssertEqual(g, expected)
    }

    func testMaskOfWrongLengthIsRejected() {
        let mask = [Float](repeating: 1, count: total - 1)
        XCTAssertThrowsError(try mask.withUnsafeBufferPointer {
            try GradientReducer(segments: segments, mask: $0, communicator: LocalCommunicator())
        })
    }
}
