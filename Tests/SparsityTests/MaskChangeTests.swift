import NN
import Tensor
import XCTest
@testable import Sparsity

final class SelectionTests: XCTestCase {
    /// The k smallest by (key, index), from a full sort.
    func reference(_ keys: [Float], _ k: Int) -> [Int32] {
        keys.indices.sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }.prefix(k).map { Int32($0) }.sorted()
    }

    func testSmallestIndicesMatchesASortWithTiesToTheLowerIndex() {
        var rng = Xoshiro256(seed: 3)
        for trial in 0..<200 {
            let n = 1 + rng.nextIndex(below: 300)
            // Few distinct values in half the trials, so ties are common.
            let levels = trial % 2 == 0 ? 5 : 1_000_000
            let keys = (0..<n).map { _ in Float(rng.nextIndex(below: levels)) - Float(levels / 2) }
            for k in [0, 1, n / 3, n / 2, n - 1, n, n + 4] {
                let got = keys.withUnsafeBufferPointer { smallestIndices($0, count: k) }
                XCTAssertEqual(got, reference(keys, max(0, k)), "n \(n) k \(k)")
            }
        }
    }
}

final class RewiringTests: XCTestCase {
    let layer = MaskableLayer(name: "l", offset: 2, outUnits: 2, inUnits: 4)   // positions 2..<10

    func testRewireDropsSmallestWeightsAndGrowsExactlyTheTopGradientInactiveEntries() {
        //                       pad   |------------------- layer --------------------|  pad
        let values: [Float] =    [9, 9, 0.5, -0.1, 0, 0.3, 0, -2, 0, 0.05, 9]
        var mask: [Float] =      [1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1]
        let gradients: [Float] = [0, 0, 0, 0, -0.7, 0, 0.2, 0, 0.9, 0.6, 0]
        // Active: 2 (0.5), 3 (0.1), 5 (0.3), 7 (2), 9 (0.05); α = 0.4 → r = ⌈0.4·5⌉ = 2:
        // drop 9 (0.05) and 3 (0.1); candidates 3, 4, 6, 8, 9 by |g|: 8 (0.9), 4 (0.7) grow.
        let r = values.withUnsafeBufferPointer { v in
            gradients.withUnsafeBufferPointer { g in
                mask.withUnsafeMutableBufferPointer { rewire(layer, values: v, gradients: g, mask: $0, dropFraction: 0.4) }
            }
        }
        XCTAssertEqual(r, 2)
        XCTAssertEqual(mask, [1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1])
    }

    func testJustDroppedEntriesCanBeRegrownAndTheCountNeverChanges() {
        var rng = Xoshiro256(seed: 11)
        let big = MaskableLayer(name: "big", offset: 0, outUnits: 20, inUnits: 30)
        for trial in 0..<20 {
            let values = (0..<big.count).map { _ in rng.nextFloat() - 0.5 }
            let gradients = (0..<big.count).map { _ in rng.nextFloat() - 0.5 }
            var mask = (0..<big.count).map { _ in rng.nextFloat() < 0.3 ? Float(1) : 0 }
            let before = mask.reduce(0, +)
            let alpha = Double(trial) / 19
            let r = values.withUnsafeBufferPointer { v in
                gradients.withUnsafeBufferPointer { g in
                    mask.withUnsafeMutableBufferPointer { rewire(big, values: v, gradients: g, mask: $0, dropFraction: alpha) }
                }
            }
            XCTAssertEqual(mask.reduce(0, +), before, "per-layer density is unchanged")
            XCTAssertEqual(r, Int((alpha * Double(before)).rounded(.up)))
        }
        // α = 1 with huge gradients on the active entries: everything is dropped and grown back.
        var mask: [Float] = [1, 0, 1, 0]
        let l = MaskableLayer(name: "s", offset: 0, outUnits: 1, inUnits: 4)
        let r = [Float](repeating: 1, count: 4).withUnsafeBufferPointer { v in
            [Float](arrayLiteral: 5, 0.1, 5, 0.1).withUnsafeBufferPointer { g in
                mask.withUnsafeMutableBufferPointer { rewire(l, values: v, gradients: g, mask: $0, dropFraction: 1) }
            }
        }
        XCTAssertEqual(r, 2)
        XCTAssertEqual(mask, [1, 0, 1, 0])
    }

    func testGlobalMagnitudeThresholdSpansLayers() {
        // Layer a holds only small weights: a global threshold empties it before touching b.
        let layers = [MaskableLayer(name: "a", offset: 0, outUnits: 2, inUnits: 2),
                      MaskableLayer(name: "b", offset: 4, outUnits: 2, inUnits: 2)]
        let values: [Float] = [0.01, -0.02, 0.03, 0.04, 1, -2, 3, 0.5]
        var mask = [Float](repeating: 1, count: 8)
        let kept = values.withUnsafeBufferPointer { v in
            mask.withUnsafeMutableBufferPointer { magnitudePrune(layers, values: v, mask: $0, density: .globalCount(3)) }
        }
        XCTAssertEqual(kept, [0, 3])
        XCTAssertEqual(mask, [0, 0, 0, 0, 1, 1, 1, 0])   // keeps 3, −2, 1
    }
}

final class MaskStateTests: XCTestCase {
    func testReplaceZeroesLeavingAndJoiningEntriesAndKeepsTheRest() {
        let store = ParameterStore()
        _ = store.register("w", shape: [2, 3], maskable: true, initializer: .normal(std: 1))
        _ = store.register("b", shape: [2], maskable: false, initializer: .ones)
        store.allocate(seed: 1)
        for p in store.parameters { store.setMomentum(p.ref, from: [Float](repeating: 7, count: p.ref.count)) }
        store.mask[4] = 0   // an inactive entry (weight and momentum kept at +0 by the store's rule)
        store.applyMask()
        let masks = MaskState(store: store)
        XCTAssertEqual(masks.generation, 0)
        XCTAssertEqual(masks.activeCounts, [5])
        XCTAssertEqual(store.packedMomentum(store.parameters[0].ref).map(Array.init), [7, 7, 7, 7, 7], "packed at the active positions")
        let before = Array(store.values)
        let next: [Float] = [1, 0, 1, 1, 1, 0, /* dense entries are not read */ 0, 0]
        let delta = next.withUnsafeBufferPointer { masks.replace(with: $0) }
        XCTAssertEqual(delta.dropped, [2])   // 1 and 5
        XCTAssertEqual(delta.grown, [1])     // 4
        XCTAssertEqual(masks.generation, 1)
        XCTAssertEqual(masks.activeIndices, [[0, 2, 3, 4]])
        let momentum = store.momentumInStoreLayout()
        for i in [1, 4, 5] {
            XCTAssertEqual(store.values[i].bitPattern, 0, "entry \(i) weight +0")
            XCTAssertEqual(momentum[i].bitPattern, 0, "entry \(i) momentum +0")
        }
        for i in [0, 2, 3, 6, 7] {
            XCTAssertEqual(store.values[i], before[i])
            XCTAssertEqual(momentum[i], 7)
        }
        XCTAssertEqual(store.packedMomentum(store.parameters[0].ref).map(Array.init), [7, 7, 7, 0], "packed at the new positions 0, 2, 3 (kept) and 4 (joined)")
        XCTAssertEqual(Array(store.mask), [1, 0, 1, 1, 1, 0, 1, 1])
    }

    /// The store asks the mask's owner for a weight's active positions (sparse layers rebuild
    /// from them); it answers only while its lists describe the store's mask.
    func testActivePositionsFollowTheMaskAndGoQuietWhenItChangesBehindTheOwner() {
        let store = ParameterStore()
        let w = store.register("w", shape: [2, 3], maskable: true, initializer: .normal(std: 1))
        let b = store.register("b", shape: [2], maskable: false, initializer: .ones)
        store.allocate(seed: 1)
        store.mask[1] = 0
        let masks = MaskState(store: store)
        XCTAssertEqual(store.activePositions?(w), [0, 2, 3, 4, 5])
        XCTAssertNil(store.activePositions?(b), "not a maskable weight")
        let next: [Float] = [0, 1, 1, 0, 1, 1, 0, 0]
        next.withUnsafeBufferPointer { _ = masks.replace(with: $0) }
        XCTAssertEqual(store.activePositions?(w), [1, 2, 4, 5])
        // Written behind the owner's back (a checkpoint load): no answer, readers scan the mask.
        store.mask[0] = 1
        store.maskDidChange()
        XCTAssertNil(store.activePositions?(w))
    }
}
