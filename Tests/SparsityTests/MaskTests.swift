import XCTest
import NN
@testable import Sparsity

final class MaskTests: XCTestCase {
    func draw(_ model: ModelName, density: Double, method: DensityMethod, mode: MaskDraw, seed: UInt64)
        throws -> (ParameterStore, [MaskableLayer], [Int]) {
        let store = try buildModel(model, classes: 10).store
        let layers = MaskableLayer.all(in: store)
        let d = try layerwiseDensities(layers, density: density, method: method)
        let nnz = nonZeroCounts(layers, densities: d, density: density)
        drawMasks(layers, densities: d, nonZeros: nnz, mode: mode, seed: seed, into: store.mask)
        return (store, layers, nnz)
    }

    func testCountModeRealisesExactCountsPerLayer() throws {
        for method in [DensityMethod.erk, .balanced, .pyramidal] {
            let (store, layers, nnz) = try draw(.resnet20, density: 0.1, method: method, mode: .count, seed: 1)
            XCTAssertEqual(activeCounts(layers, mask: UnsafeBufferPointer(store.mask)), nnz)
            // Dense tensors keep a mask of ones.
            for p in store.parameters where !p.maskable {
                XCTAssertTrue((0..<p.ref.count).allSatisfy { store.mask[p.ref.offset + $0] == 1 })
            }
        }
    }

    func testBernoulliModeIsCloseToTheDensity() throws {
        let (store, layers, nnz) = try draw(.resnet20, density: 0.2, method: .uniform, mode: .bernoulli, seed: 3)
        let active = activeCounts(layers, mask: UnsafeBufferPointer(store.mask))
        let total = Double(nnz.reduce(0, +))
        XCTAssertEqual(Double(active.reduce(0, +)) / total, 1, accuracy: 0.02)
    }

    func testSameSeedSameMaskDifferentSeedDifferentMask() throws {
        let a = try draw(.resnet20, density: 0.1, method: .erk, mode: .count, seed: 42).0
        let b = try draw(.resnet20, density: 0.1, method: .erk, mode: .count, seed: 42).0
        let c = try draw(.resnet20, density: 0.1, method: .erk, mode: .count, seed: 43).0
        XCTAssertEqual(Array(a.mask), Array(b.mask))
        XCTAssertNotEqual(Array(a.mask), Array(c.mask))
    }

    func testCountModeIsUniformOverPositions() throws {
        // 200 draws of 10 out of 40: each position should be chosen about 50 times.
        let layer = MaskableLayer(name: "w", offset: 0, outUnits: 4, inUnits: 10)
        var hits = [Int](repeating: 0, count: 40)
        var mask = [Float](repeating: 0, count: 40)
        for seed in 0..<200 {
            mask.withUnsafeMutableBufferPointer {
                drawMasks([layer], densities: [0.25], mode: .count, seed: UInt64(seed), into: $0)
            }
            for i in 0..<40 where mask[i] != 0 { hits[i] += 1 }
            XCTAssertEqual(mask.reduce(0, +), 10)
        }
        for h in hits { XCTAssertTrue((25...75).contains(h), "position hit \(h) times") }
    }

    func testFlowPreservationLeavesNoDeadUnitsAndCountsItsEdges() throws {
        for method in [FlowPreservation.randomAddition, .rejection] {
            for keep in method == .randomAddition ? [false, true] : [false] {
                let (store, layers, _) = try draw(.resnet20, density: 0.005, method: .balanced, mode: .count, seed: 7)
                let before = activeCounts(layers, mask: UnsafeBufferPointer(store.mask))
                let deadBefore = layers.map { deadUnits($0, mask: store.mask.baseAddress!) }
                XCTAssertTrue(deadBefore.contains { !$0.outputs.isEmpty || !$0.inputs.isEmpty }, "a very sparse mask has dead units")
                let d = try layerwiseDensities(layers, density: 0.005, method: .balanced)
                let repairs = preserveFlow(layers, densities: d, method: method, keepCount: keep, seed: 1, mask: store.mask)
                let after = activeCounts(layers, mask: UnsafeBufferPointer(store.mask))
                for (l, layer) in layers.enumerated() {
                    let dead = deadUnits(layer, mask: store.mask.baseAddress!)
                    XCTAssertTrue(dead.outputs.isEmpty && dead.inputs.isEmpty, "\(method) \(layer.name)")
                    XCTAssertEqual(repairs[l].deadOutputs, deadBefore[l].outputs.count)
                    XCTAssertEqual(after[l] - before[l], repairs[l].edgesAdded - repairs[l].edgesRemoved, "\(method) \(layer.name)")
                    XCTAssertLessThanOrEqual(repairs[l].edgesRemoved, keep ? repairs[l].edgesAdded : 0)
                }
            }
        }
    }

    func testRandomAdditionCanKeepTheCountWhenLayersHaveSlack() throws {
        let (store, layers, nnz) = try draw(.resnet20, density: 0.02, method: .balanced, mode: .count, seed: 11)
        let d = try layerwiseDensities(layers, density: 0.02, method: .balanced)
        let repairs = preserveFlow(layers, densities: d, method: .randomAddition, keepCount: true, seed: 2, mask: store.mask)
        XCTAssertGreaterThan(repairs.reduce(0) { $0 + $1.edgesAdded }, 0)
        XCTAssertEqual(activeCounts(layers, mask: UnsafeBufferPointer(store.mask)), nnz)
        for l in layers { XCTAssertTrue(deadUnits(l, mask: store.mask.baseAddress!) == ([], []), l.name) }
    }
}

final class MagnitudeTests: XCTestCase {
    func testGlobalAndPerLayerMagnitudePruning() {
        let layers = [MaskableLayer(name: "a", offset: 0, outUnits: 2, inUnits: 2),
                      MaskableLayer(name: "b", offset: 4, outUnits: 2, inUnits: 2)]
        let values: [Float] = [0.1, -5, 3, 0.2, -0.3, 4, 0.05, 2]
        var mask = [Float](repeating: 1, count: 8)
        mask[1] = 0   // already pruned: stays pruned although |w| is largest
        let kept = values.withUnsafeBufferPointer { v in
            mask.withUnsafeMutableBufferPointer { magnitudePrune(layers, values: v, mask: $0, density: .global(0.375)) }
        }
        XCTAssertEqual(kept, [1, 2])               // 3 of 8: 4, 3, 2 (5 was already pruned)
        XCTAssertEqual(mask, [0, 0, 1, 0, 0, 1, 0, 1])
        var m2 = [Float](repeating: 1, count: 8)
        let perLayer = values.withUnsafeBufferPointer { v in
            m2.withUnsafeMutableBufferPointer { magnitudePrune(layers, values: v, mask: $0, density: .perLayer([0.5, 0.25])) }
        }
        XCTAssertEqual(perLayer, [2, 1])
        XCTAssertEqual(m2, [0, 1, 1, 0, 0, 1, 0, 0])
    }
}
