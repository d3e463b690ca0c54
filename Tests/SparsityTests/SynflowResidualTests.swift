import XCTest
import NN
import Tensor
@testable import Sparsity

/// Synflow on residual networks: scores against path sums computed in Double.
final class SynflowResidualTests: XCTestCase {
    /// Flatten → Linear a (2→3) → `blocks` × [x + b2·relu(b1·x)] → Linear c (3→2), biases zero.
    /// Block weights are `scale` times larger than a and c, so paths through the main branches
    /// and the identity shortcuts differ by orders of magnitude.
    private func residualChain(blocks: Int, scale: Float, seed: UInt64) throws -> (Network, [MaskableLayer]) {
        let store = ParameterStore()
        let body = Sequential([Flatten(), Linear("a", store: store, inFeatures: 2, outFeatures: 3)])
        for b in 0..<blocks {
            body.append(ResidualBlock(main: Sequential([
                Linear("b\(b).1", store: store, inFeatures: 3, outFeatures: 3), ReLU(inPlace: true),
                Linear("b\(b).2", store: store, inFeatures: 3, outFeatures: 3),
            ]), shortcut: nil))
        }
        body.append(Linear("c", store: store, inFeatures: 3, outFeatures: 2))
        let net = try Network(name: "chain", store: store, body: body, input: (2, 1, 1), classes: 2, seed: seed)
        var rng = Xoshiro256(seed: seed)
        for p in store.parameters {
            let isBlock = p.name.hasPrefix("b")
            for i in 0..<p.ref.count {
                store.value(p.ref)[i] = p.name.hasSuffix(".bias") ? 0 : (rng.nextFloat() - 0.5) * (isBlock ? scale : 1)
            }
        }
        return (net, MaskableLayer.all(in: store))
    }

    /// Row-major |W| of a maskable layer, in Double.
    private func magnitudes(_ net: Network, _ l: MaskableLayer) -> [[Double]] {
        (0..<l.outUnits).map { o in (0..<l.inUnits).map { i in Double(abs(net.store.values[l.offset + o * l.inUnits + i])) } }
    }

    private func apply(_ m: [[Double]], _ v: [Double]) -> [Double] { m.map { row in zip(row, v).reduce(0) { $0 + $1.0 * $1.1 } } }
    private func applyT(_ m: [[Double]], _ u: [Double]) -> [Double] {
        (0..<m[0].count).map { j in (0..<m.count).reduce(0) { $0 + m[$1][j] * u[$1] } }
    }

    /// log R and log scores by the path-sum formulas: for W between right vector v (flow into W)
    /// and left vector u (∂R/∂(W's output)), score(W_ij) = |W_ij|·u_i·v_j.
    private func reference(_ net: Network, _ layers: [MaskableLayer], blocks: Int) -> (Double, [[Double]]) {
        let a = magnitudes(net, layers[0]), c = magnitudes(net, layers[layers.count - 1])
        let b1 = (0..<blocks).map { magnitudes(net, layers[1 + 2 * $0]) }
        let b2 = (0..<blocks).map { magnitudes(net, layers[2 + 2 * $0]) }
        // Forward vectors: x[0] = A·1, x[k+1] = x[k] + B2_k B1_k x[k].
        var x = [apply(a, [1, 1])]
        for k in 0..<blocks {
            let h = apply(b2[k], apply(b1[k], x[k]))
            x.append(zip(x[k], h).map { $0 + $1 })
        }
        // Backward vectors: u[blocks] = Cᵀ1, u[k] = u[k+1] + B1_kᵀ B2_kᵀ u[k+1].
        var u = [[Double]](repeating: [], count: blocks + 1)
        u[blocks] = applyT(c, [1, 1])
        for k in stride(from: blocks - 1, through: 0, by: -1) {
            let g = applyT(b1[k], applyT(b2[k], u[k + 1]))
            u[k] = zip(u[k + 1], g).map { $0 + $1 }
        }
        func scores(_ w: [[Double]], left: [Double], right: [Double]) -> [Double] {
            w.indices.flatMap { i in w[i].indices.map { j in log(w[i][j] * left[i] * right[j]) } }
        }
        var out = [scores(a, left: u[0], right: [1, 1])]
        for k in 0..<blocks {
            out.append(scores(b1[k], left: applyT(b2[k], u[k + 1]), right: x[k]))
            out.append(scores(b2[k], left: u[k + 1], right: apply(b1[k], x[k])))
        }
        out.append(scores(c, left: [1, 1], right: x[blocks]))
        let r = zip([1.0, 1.0], apply(c, x[blocks])).reduce(0) { $0 + $1.0 * $1.1 }
        return (log(r), out)
    }

    func testScoresEqualPathSumsOnAResidualChain() throws {
        let (net, layers) = try residualChain(blocks: 2, scale: 10, seed: 3)
        let scores = try SynflowScores(net, layers: layers)
        let (logR, expected) = reference(net, layers, blocks: 2)
        XCTAssertEqual(scores.logR, logR, accuracy: 1e-6)
        for (got, want) in zip(scores.logScores, expected) {
            for (g, w) in zip(got, want) { XCTAssertEqual(g, w, accuracy: 1e-6, "log score") }
        }
    }

    func testScoresBeyondFloatRangeStayExact() throws {
        // 12 blocks with weights ~ 500: R ≈ 10⁵⁰, far past Float's 3·10³⁸.
        let (net, layers) = try residualChain(blocks: 12, scale: 1000, seed: 5)
        let scores = try SynflowScores(net, layers: layers)
        let (logR, expected) = reference(net, layers, blocks: 12)
        XCTAssertGreaterThan(logR, log(1e45))
        XCTAssertEqual(scores.logR, logR, accuracy: 1e-5 * abs(logR))
        for (got, want) in zip(scores.logScores, expected) {
            for (g, w) in zip(got, want) { XCTAssertEqual(g, w, accuracy: 1e-5, "log score") }
        }
    }

    func testResNet20RankingEqualsADoublePrecisionComputation() throws {
        let net = try buildModel(.resnet20, classes: 10, input: (3, 8, 8), seed: 4)
        let layers = MaskableLayer.all(in: net.store)
        let scores = try SynflowScores(net, layers: layers)
        let reference = try DoubleSynflow(net)
        let logR = reference.logR
        XCTAssertEqual(scores.logR, logR, accuracy: 1e-5 * abs(logR))
        // Kept sets at density 0.1 agree except where the Double scores are within 1e-5 (relative)
        // of the threshold: differences only at ties.
        var ours: [(Double, Int)] = [], exact: [(Double, Int)] = []
        for (l, layer) in layers.enumerated() {
            let ref = reference.logScores(of: layer)
            for j in 0..<layer.count {
                ours.append((scores.logScores[l][j], layer.offset + j))
                exact.append((ref[j], layer.offset + j))
                if ref[j].isFinite { XCTAssertEqual(scores.logScores[l][j], ref[j], accuracy: 1e-4, "\(layer.name)[\(j)]") }
            }
        }
        let keep = ours.count / 10
        let keptOurs = Set(ours.sorted { $0.0 > $1.0 }.prefix(keep).map(\.1))
        let sortedExact = exact.sorted { $0.0 > $1.0 }
        let keptExact = Set(sortedExact.prefix(keep).map(\.1))
        let threshold = sortedExact[keep - 1].0
        let exactScore = Dictionary(uniqueKeysWithValues: exact.map { ($0.1, $0.0) })
        for i in keptOurs.symmetricDifference(keptExact) {
            XCTAssertEqual(exactScore[i]!, threshold, accuracy: 1e-5, "weight \(i) differs away from the threshold")
        }
        XCTAssertLessThan(keptOurs.symmetricDifference(keptExact).count, 20)
    }

    func testNoResNetLayerIsEmptiedAndTotalsAreExact() throws {
        for model in [ModelName.resnet20, .resnet18] {
            let net = try buildModel(model, classes: 10, input: (3, 8, 8), baseWidth: 4, seed: 1)
            let layers = MaskableLayer.all(in: net.store)
            try synflowPrune(net, layers: layers, density: 0.1, rounds: 5)
            let active = activeCounts(layers, mask: UnsafeBufferPointer(net.store.mask))
            let total = layers.reduce(0) { $0 + $1.count }
            XCTAssertEqual(Double(active.reduce(0, +)), 0.1 * Double(total), accuracy: 1, "\(model)")
            XCTAssertTrue(active.allSatisfy { $0 > 0 }, "\(model): \(zip(layers.map(\.name), active).map { "\($0) \($1)" })")
            // Shortcut convolutions stay dense by default (the Synflow authors' convention).
            for layer in layers where net.shortcutWeightOffsets.contains(layer.offset) {
                XCTAssertEqual(active[layers.firstIndex(of: layer)!], layer.count, layer.name)
            }
        }
    }
}
