import Foundation
import Tensor
import XCTest
@testable import Datasets

final class LoaderTests: XCTestCase {
    func testShardsCoverEachIndexOnceWithEqualBatchCounts() {
        let count = 103, batch = 8
        for world in [1, 2, 3, 4] {
            var seen: [Int] = []
            let shards = (0..<world).map { Sharding(count: count, batchSize: batch, rank: $0, worldSize: world, seed: 5) }
            let perRank = shards.map { $0.batches(epoch: 2) }
            XCTAssertEqual(Set(perRank.map(\.count)).count, 1, "equal batch counts")
            XCTAssertEqual(perRank[0].count, count / (batch * world))
            for b in perRank { for indices in b { XCTAssertEqual(indices.count, batch); seen += indices } }
            XCTAssertEqual(Set(seen).count, seen.count, "no index twice")
            XCTAssertEqual(seen.count, count - count % (batch * world), "remainder dropped")
        }
        let s = Sharding(count: count, batchSize: batch, rank: 0, worldSize: 2, seed: 5)
        XCTAssertNotEqual(s.permutation(epoch: 0), s.permutation(epoch: 1))
        XCTAssertEqual(s.permutation(epoch: 3), Sharding(count: count, batchSize: batch, rank: 1, worldSize: 2, seed: 5).permutation(epoch: 3))
        // Evaluation covers everything exactly once.
        let eval = (0..<3).flatMap { Sharding(count: count, batchSize: batch, rank: $0, worldSize: 3, seed: 0).evaluationBatches().flatMap { $0 } }
        XCTAssertEqual(eval.sorted(), Array(0..<count))
    }

    func testPadCropWithoutShiftIsNormalisationAndFlipMirrors() throws {
        let img = RGBImage(width: 4, height: 4, pixels: (0..<48).map { UInt8($0 * 5) })
        let t = ImageTransform(size: 4, augmentation: .none, normalization: .cifar10)
        var out = [Float](repeating: 0, count: 48)
        var rng = Xoshiro256(seed: 0)
        try out.withUnsafeMutableBufferPointer { try t.apply(img, rng: &rng, into: $0.baseAddress!) }
        // Channel 1 at (y 2, x 3) is pixel index (2·4+3)·3+1 = 34 → value 170.
        XCTAssertEqual(out[16 + 2 * 4 + 3], (170 / 255 - 0.4822) / 0.2435, accuracy: 1e-5)
        // Pad-crop keeps every output either an input pixel or padding.
        let pc = ImageTransform(size: 4, augmentation: .padCrop(padding: 1, flip: true), normalization: .none)
        for seed in 0..<20 {
            var r = Xoshiro256(seed: UInt64(seed))
            try out.withUnsafeMutableBufferPointer { try pc.apply(img, rng: &r, into: $0.baseAddress!) }
            let allowed = img.pixels.map { Float($0) / 255 } + [0]
            XCTAssertTrue(out.allSatisfy { v in allowed.contains { abs($0 - v) < 1e-6 } })
        }
    }

    func testResizeTransformsKeepConstantImagesConstant() throws {
        let img = RGBImage(width: 50, height: 30, pixels: [UInt8](repeating: 200, count: 50 * 30 * 3))
        var out = [Float](repeating: 0, count: 3 * 16 * 16)
        for aug in [Augmentation.imageNetTrain, .imageNetEval] {
            let t = ImageTransform(size: 16, augmentation: aug, normalization: .none)
            var rng = Xoshiro256(seed: 1)
            try out.withUnsafeMutableBufferPointer { try t.apply(img, rng: &rng, into: $0.baseAddress!) }
            XCTAssertTrue(out.allSatisfy { abs($0 - 200.0 / 255) < 1e-5 }, "\(aug)")
        }
    }

    func testLoaderDeliversDeterministicBatchesInTheBackground() throws {
        let ds = SyntheticDataset(count: 100, classes: 4, width: 8, height: 8, seed: 1)
        let t = ImageTransform(size: 8, augmentation: .padCrop(padding: 2, flip: true), normalization: .none)
        let sharding = Sharding(count: 100, batchSize: 16, rank: 0, worldSize: 1, seed: 3)
        var runs: [[Float]] = []
        for threads in [1, 2] {
            let loader = DataLoader(dataset: ds, transform: t, depth: 2, threads: threads)
            loader.start(batches: sharding.batches(epoch: 0), epoch: 0, seed: 9)
            var all: [Float] = []
            var batches = 0
            while let b = try loader.next() {
                XCTAssertEqual(b.count, 16)
                XCTAssertEqual(b.images.count, 16 * 3 * 64)
                all += b.images
                batches += 1
            }
            XCTAssertEqual(batches, 6)
            runs.append(all)
        }
        XCTAssertEqual(runs[0], runs[1], "same batches whatever the thread count")
    }

    func testSyntheticDataIsDeterministicAndClassDependent() throws {
        let a = SyntheticDataset(count: 50, seed: 2), b = SyntheticDataset(count: 50, seed: 2)
        XCTAssertEqual(try a.image(at: 7), try b.image(at: 7))
        XCTAssertEqual(a.label(at: 7), b.label(at: 7))
        // Images of one class are closer to each other than to another class's.
        let byClass = Dictionary(grouping: 0..<50, by: a.label(at:))
        let classes = byClass.keys.sorted().filter { byClass[$0]!.count >= 2 }
        let c0 = byClass[classes[0]]!, c1 = byClass[classes[1]]!
        func dist(_ i: Int, _ j: Int) throws -> Double {
            zip(try a.image(at: i).pixels, try a.image(at: j).pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) }
        }
        XCTAssertLessThan(try dist(c0[0], c0[1]), try dist(c0[0], c1[0]))
    }

    func testUndecodableImagesAreSkippedAndCountedWhenAsked() throws {
        final class Flaky: ImageDataset, @unchecked Sendable {
            var count: Int { 8 }
            var classNames: [String] { ["a", "b"] }
            func label(at i: Int) -> Int { i % 2 }
            func image(at i: Int) throws -> RGBImage {
                if i == 3 { throw DatasetError("img3.jpg: corrupt") }
                return RGBImage(width: 2, height: 2, pixels: [UInt8](repeating: UInt8(i), count: 12))
            }
        }
        let t = ImageTransform(size: 2, augmentation: .none, normalization: .none)
        let strict = DataLoader(dataset: Flaky(), transform: t)
        XCTAssertThrowsError(try strict.makeBatch(Array(0..<8), epoch: 0, seed: 0)) { XCTAssertTrue("\($0)".contains("img3.jpg")) }
        let lenient = DataLoader(dataset: Flaky(), transform: t, skipBad: true)
        let b = try lenient.makeBatch(Array(0..<8), epoch: 0, seed: 0)
        XCTAssertEqual(b.count, 8)
        XCTAssertEqual(lenient.skipped, 1)
    }
}
