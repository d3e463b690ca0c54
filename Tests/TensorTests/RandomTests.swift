import XCTest
import Tensor

final class RandomTests: XCTestCase {
    func testSameSeedSameStreamDifferentSeedDifferentStream() {
        var a = Xoshiro256(seed: 42), b = Xoshiro256(seed: 42), c = Xoshiro256(seed: 43)
        let xa = (0..<8).map { _ in a.next() }
        XCTAssertEqual(xa, (0..<8).map { _ in b.next() })
        XCTAssertNotEqual(xa, (0..<8).map { _ in c.next() })
    }

    func testFloatsAreUniformInUnitInterval() {
        var rng = Xoshiro256(seed: 1)
        let n = 200_000
        var sum = 0.0, sumSq = 0.0
        var buckets = [Int](repeating: 0, count: 10)
        for _ in 0..<n {
            let x = rng.nextFloat()
            XCTAssertTrue(x >= 0 && x < 1)
            sum += Double(x); sumSq += Double(x) * Double(x)
            buckets[Int(x * 10)] += 1
        }
        XCTAssertEqual(sum / Double(n), 0.5, accuracy: 0.005)
        XCTAssertEqual(sumSq / Double(n) - 0.25, 1.0 / 12, accuracy: 0.005)
        for count in buckets { XCTAssertEqual(Double(count) / Double(n), 0.1, accuracy: 0.005) }
    }

    func testIndexBelowBoundStaysInRange() {
        var rng = Xoshiro256(seed: 3)
        var seen = Set<Int>()
        for _ in 0..<10_000 {
            let i = rng.nextIndex(below: 7)
            XCTAssertTrue((0..<7).contains(i))
            seen.insert(i)
        }
        XCTAssertEqual(seen.count, 7)
    }
}
