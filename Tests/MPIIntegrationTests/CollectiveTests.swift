import Comm
import XCTest

/// Collectives on ≥ 2 real ranks against values computed locally for every rank.
/// Each test runs the same collectives in the same order on all ranks, whatever it asserts.
final class CollectiveTests: XCTestCase {
    /// Value rank `r` contributes at position `i`.
    func contribution(_ r: Int, _ i: Int) -> Int { (r + 1) * 1000 + i * (r % 2 == 0 ? 3 : -2) }

    func testAllreduceOfEveryTypeAndOp() throws {
        let comm = try World.require()
        let n = 37
        let ranks = 0..<comm.size
        for op in ReduceOp.allCases {
            func expected(_ i: Int) -> Int {
                let values = ranks.map { contribution($0, i) }
                switch op {
                case .sum: return values.reduce(0, +)
                case .max: return values.max()!
                case .min: return values.min()!
                }
            }
            var f = (0..<n).map { Float(contribution(comm.rank, $0)) }
            var d = (0..<n).map { Double(contribution(comm.rank, $0)) }
            var i32 = (0..<n).map { Int32(contribution(comm.rank, $0)) }
            var i64 = (0..<n).map { Int64(contribution(comm.rank, $0)) * 1_000_000_000 }
            var u8 = (0..<n).map { UInt8(truncatingIfNeeded: contribution(comm.rank, $0) % 50 + 50) }
            try comm.allreduce(&f, op: op)
            try comm.allreduce(&d, op: op)
            try comm.allreduce(&i32, op: op)
            try comm.allreduce(&i64, op: op)
            if op != .sum { try comm.allreduce(&u8, op: op) }
            for i in 0..<n {
                XCTAssertEqual(f[i], Float(expected(i)), "\(op) float \(i)")
                XCTAssertEqual(d[i], Double(expected(i)), "\(op) double \(i)")
                XCTAssertEqual(i32[i], Int32(expected(i)), "\(op) int32 \(i)")
                XCTAssertEqual(i64[i], Int64(expected(i)) * 1_000_000_000, "\(op) int64 \(i)")
            }
            if op != .sum {
                let u8Expected = (0..<n).map { i -> UInt8 in
                    let v = ranks.map { UInt8(truncatingIfNeeded: contribution($0, i) % 50 + 50) }
                    return op == .max ? v.max()! : v.min()!
                }
                XCTAssertEqual(u8, u8Expected)
            }
        }
    }

    func testBroadcastFromEveryRoot() throws {
        let comm = try World.require()
        for root in 0..<comm.size {
            var values = (0..<10).map { Double(comm.rank * 100 + $0) }
            try comm.broadcast(&values, root: root)
            XCTAssertEqual(values, (0..<10).map { Double(root * 100 + $0) })
            var bytes = [UInt8](repeating: UInt8(comm.rank), count: 3)
            try comm.broadcast(&bytes, root: root)
            XCTAssertEqual(bytes, [UInt8](repeating: UInt8(root), count: 3))
        }
    }

    func testNonBlockingAllreduceCompletes() throws {
        let comm = try World.require()
        var a = [Float](repeating: Float(comm.rank + 1), count: 100_000)
        var b = [Int64](repeating: Int64(comm.rank), count: 5)
        let total = Float((1...comm.size).reduce(0, +))
        try a.withUnsafeMutableBufferPointer { pa in
            try b.withUnsafeMutableBufferPointer { pb in
                let ra = try comm.startAllreduce(pa, op: .sum)
                let rb = try comm.startAllreduce(pb, op: .max)
                var spins = 0
                while try !rb.test() { spins += 1 }
                try ra.wait()
                XCTAssertTrue(try ra.test())
            }
        }
        XCTAssertTrue(a.allSatisfy { $0 == total })
        XCTAssertEqual(b, [Int64](repeating: Int64(comm.size - 1), count: 5))
    }

    func testBarrierAndRankIdentity() throws {
        let comm = try World.require()
        try comm.barrier()
        var ranks = [Int32](repeating: 0, count: comm.size)
        ranks[comm.rank] = Int32(comm.rank)
        try comm.allreduce(&ranks, op: .sum)
        XCTAssertEqual(ranks, (0..<comm.size).map(Int32.init))
    }
}
