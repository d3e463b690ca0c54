import XCTest
import NN
import Tensor
@testable import Sparsity

final class SynflowTests: XCTestCase {
    func testSynflowHitsTheDensityKeepsEveryLayerAndRestoresTheNetwork() throws {
        let net = try buildModel(.mlp, classes: 10, input: (64, 1, 1), hidden: [256, 256], seed: 1)
        let layers = MaskableLayer.all(in: net.store)
        let before = Array(net.store.values)
        try synflowPrune(net, layers: layers, density: 0.01, rounds: 20)
        let active = activeCounts(layers, mask: UnsafeBufferPointer(net.store.mask))
        let total = layers.reduce(0) { $0 + $1.count }
        XCTAssertEqual(active.reduce(0, +), Int((0.01 * Double(total)).rounded()))
        // Synflow avoids layer collapse: every layer keeps weights, the small last layer most.
        XCTAssertTrue(active.allSatisfy { $0 > 0 }, "\(active)")
        let densities = zip(active, layers).map { Double($0) / Double($1.count) }
        XCTAssertGreaterThan(densities[2], densities[1])
        XCTAssertEqual(Array(net.store.values), before, "weights restored")
        XCTAssertTrue(net.training)
    }

    func testOneRoundScoresAreSynapticFlowOfATinyNetwork() throws {
        // 2 inputs → 2 hidden → 2 outputs, no hidden ReLU effect (all positive).
        // R = 1ᵀ|W2||W1|1; score(W1[i][j]) = |W1[i][j]|·Σ_k |W2[k][i]|,
        // score(W2[k][i]) = |W2[k][i]|·Σ_j |W1[i][j]|.
        let net = try buildModel(.mlp, classes: 2, input: (2, 1, 1), hidden: [2], seed: 0)
        let s = net.store
        let w1: [Float] = [1, 2, 3, 4.4], w2: [Float] = [0.5, -1, 2, 0.25]
        let p = s.parameters   // fc1.weight, fc1.bias, fc2.weight, fc2.bias
        for i in 0..<4 { s.value(p[0].ref)[i] = w1[i]; s.value(p[2].ref)[i] = w2[i] }
        for b in [p[1], p[3]] { for i in 0..<2 { s.value(b.ref)[i] = 0 } }
        let layers = MaskableLayer.all(in: s)
        // Keep 3 of 8 weights in one round.
        try synflowPrune(net, layers: layers, density: 3.0 / 8, rounds: 1)
        let col2: [Double] = [2.5, 1.25]              // Σ_k |W2[k][i]| for i = 0, 1
        let row1: [Double] = [3, 7.4]                 // Σ_j |W1[i][j]|
        let scores1: [Double] = (0..<4).map { Double(abs(w1[$0])) * col2[$0 / 2] }
        let scores2: [Double] = (0..<4).map { Double(abs(w2[$0])) * row1[$0 % 2] }
        let all = (scores1 + scores2).enumerated().sorted { $0.element > $1.element }.prefix(3).map(\.offset)
        let kept = (0..<4).filter { s.maskValues(p[0].ref)[$0] != 0 } + (0..<4).filter { s.maskValues(p[2].ref)[$0] != 0 }.map { $0 + 4 }
        XCTAssertEqual(Set(kept), Set(all))
    }
}

final class SNIPTests: XCTestCase {
    func testSNIPKeepsTheGlobalCountAndLeavesTheNetworkAsItWas() throws {
        let net = try buildModel(.resnet20, classes: 4, input: (3, 8, 8), seed: 2)
        let layers = MaskableLayer.all(in: net.store)
        var rng = Xoshiro256(seed: 1)
        let images = (0..<(16 * 3 * 64)).map { _ in rng.nextFloat() - 0.5 }
        let labels = (0..<16).map { Int32($0 % 4) }
        let values = Array(net.store.values), stats = net.batchNorms.map(\.runningMean)
        let d = try snipLayerDensities(net, layers: layers, density: 0.1, batches: [(images, labels)])
        let kept = zip(d, layers).reduce(0.0) { $0 + $1.0 * Double($1.1.count) }
        let total = Double(layers.reduce(0) { $0 + $1.count })
        XCTAssertEqual(kept, (0.1 * total).rounded(), accuracy: 0.5)
        XCTAssertEqual(Array(net.store.values), values)
        XCTAssertEqual(net.batchNorms.map(\.runningMean), stats)
        XCTAssertTrue(net.store.gradients.allSatisfy { $0 == 0 })
        // The ratios are usable as ER-SNIP layer densities with the exact total.
        let er = try layerwiseDensities(layers, density: 0.1, method: .erSNIP,
                                        options: .init(layerRatios: Dictionary(uniqueKeysWithValues: zip(layers.map(\.name), d))))
        XCTAssertEqual(zip(er, layers).reduce(0.0) { $0 + $1.0 * Double($1.1.count) } / total, 0.1, accuracy: 1e-9)
    }
}
