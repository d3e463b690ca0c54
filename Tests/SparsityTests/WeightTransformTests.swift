import NN
import Tensor
import XCTest
@testable import Sparsity

/// Finite-difference checks of the STR and edge-popup parameterisations on a small MLP with a
/// random mask: objective `L = Σ r ⊙ logits` (r random), accumulated in Double.
final class WeightTransformTests: XCTestCase {
    let batch = 6, features = 16

    func makeMLP(batchNormAffine: Bool = true, _ make: @escaping (ParameterStore) -> WeightTransform) throws -> Network {
        let net = try buildModel(.mlp, classes: 3, input: (1, 4, 4), hidden: [12], seed: 5,
                                 batchNormAffine: batchNormAffine, transform: make)
        // A random mask at density 0.7, applied the way training applies it.
        var rng = Xoshiro256(seed: 9)
        for l in MaskableLayer.all(in: net.store) {
            for i in l.offset..<(l.offset + l.count) { net.store.mask[i] = rng.nextFloat() < 0.7 ? 1 : 0 }
        }
        net.store.applyMask()
        return net
    }

    /// Input (channel-major, as the layers take it) and output weights r.
    func data(_ net: Network) -> (x: Tensor, r: Tensor) {
        var rng = Xoshiro256(seed: 11)
        let x = Tensor(Shape(n: batch, c: features)), r = Tensor(Shape(n: batch, c: net.classes))
        for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1 }
        for i in 0..<r.count { r.data[i] = rng.nextFloat() * 2 - 1 }
        return (x, r)
    }

    /// L with the effective weights as they stand (no refresh).
    func objective(_ net: Network, _ x: Tensor, _ r: Tensor) -> Double {
        let y = net.body.forward(x, net.ctx)
        return (0..<y.count).reduce(0.0) { $0 + Double(y.data[$1]) * Double(r.data[$1]) }
    }

    /// Analytic gradients: backward gives dL/dw_eff, the transform turns them into dL/dθ.
    func analytic(_ net: Network, _ x: Tensor, _ r: Tensor) -> [Float] {
        let store = net.store
        store.refreshEffective()
        _ = objective(net, x, r)
        store.zeroGradients()
        let dy = net.ctx.gradientBuffer(r.shape)
        dy.data.update(from: r.data, count: r.count)
        net.ctx.release(net.body.backward(dy, net.ctx))
        store.transform!.backpropagate(store)
        return Array(store.gradients)
    }

    func assertClose(_ numeric: Double, _ analytic: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Double(analytic), numeric, accuracy: 2e-3 + 1e-2 * abs(numeric), what, file: file, line: line)
    }

    func testSoftThresholdGradientsMatchFiniteDifferences() throws {
        let net = try makeMLP { SoftThreshold(store: $0, initial: -3) }
        let store = net.store, str = store.transform as! SoftThreshold
        let (x, r) = data(net)
        let g = analytic(net, x, r)
        let t = str.thresholdValues(store)
        XCTAssertEqual(Double(t[0]), 1 / (1 + exp(3.0)), accuracy: 1e-6)
        func L() -> Double { store.refreshEffective(); return objective(net, x, r) }
        var checkedWeights = 0, belowThreshold = 0
        for (k, l) in str.layers.enumerated() {
            for i in l.offset..<(l.offset + l.count) {
                let w = store.values[i]
                if store.mask[i] == 0 { XCTAssertEqual(g[i], 0, "masked weights get no gradient"); continue }
                if abs(abs(w) - t[k]) < 2e-3 { continue }   // too close to the kink
                if abs(w) <= t[k] { belowThreshold += 1; XCTAssertEqual(g[i], 0); continue }
                guard checkedWeights < 60 || i % 7 == 0 else { continue }
                let h: Float = 1e-3
                store.values[i] = w + h; let plus = L()
                store.values[i] = w - h; let minus = L()
                store.values[i] = w
                assertClose((plus - minus) / (2 * Double(h)), g[i], "\(l.name)[\(i - l.offset)]")
                checkedWeights += 1
            }
        }
        XCTAssertGreaterThan(belowThreshold, 10, "the threshold should switch some weights off")
        for s in str.thresholds {
            let v = store.value(s)[0], h: Float = 1e-2
            store.value(s)[0] = v + h; let plus = L()
            store.value(s)[0] = v - h; let minus = L()
            store.value(s)[0] = v
            XCTAssertNotEqual(g[s.offset], 0)
            assertClose((plus - minus) / (2 * Double(h)), g[s.offset], store.parameters[s.index].name)
        }
    }

    func testSoftThresholdStaysInsideTheMaskAndKeepsTheWeightsAboveIt() throws {
        let net = try makeMLP { SoftThreshold(store: $0, initial: -3) }
        let store = net.store, str = store.transform as! SoftThreshold
        store.refreshEffective()
        let t = str.thresholdValues(store)
        var proposal = Array(store.mask)
        proposal.withUnsafeMutableBufferPointer { str.keepAboveThreshold(store, proposal: $0) }
        for (k, l) in str.layers.enumerated() {
            for i in l.offset..<(l.offset + l.count) {
                let w = store.values[i], e = store.effective[i]
                let expected: Float = store.mask[i] != 0 && abs(w) > t[k] ? (w > 0 ? w - t[k] : w + t[k]) : 0
                XCTAssertEqual(e, expected)
                XCTAssertEqual(e.bitPattern == 0 || e != 0, true, "zeros are +0")
                XCTAssertEqual(proposal[i], e != 0 ? 1 : 0)
            }
        }
        XCTAssertEqual(str.effectiveCounts(store), str.layers.map { l in
            (l.offset..<(l.offset + l.count)).filter { proposal[$0] != 0 }.count
        })
        // σ(−200) is exactly 0 in Float: every active weight is used.
        store.value(str.thresholds[0])[0] = -200
        store.refreshEffective()
        let first = str.layers[0]
        XCTAssertEqual(str.effectiveCounts(store)[0], (first.offset..<(first.offset + first.count)).filter { store.values[$0] != 0 }.count)
    }

    func testEdgePopupUsesExactlyTheTopKScoresOfEachLayerInsideTheMask() throws {
        let net = try makeMLP(batchNormAffine: false) { EdgePopupScores(store: $0) }
        let store = net.store, ep = store.transform as! EdgePopupScores
        for p in store.parameters where !p.maskable {
            XCTAssertTrue((0..<p.ref.count).allSatisfy { store.value(p.ref)[$0] == 0 }, "\(p.name) is frozen at 0")
        }
        let active = ep.layers.map { l in (l.offset..<(l.offset + l.count)).filter { store.mask[$0] != 0 } }
        ep.keep = active.map { $0.count * 2 / 5 }
        store.refreshEffective()
        for (k, l) in ep.layers.enumerated() {
            let want = active[k].sorted { abs(store.values[$0]) != abs(store.values[$1]) ? abs(store.values[$0]) > abs(store.values[$1]) : $0 < $1 }
                .prefix(ep.keep[k]).sorted()
            XCTAssertEqual(ep.selected[k].map { l.offset + Int($0) }, want, l.name)
            XCTAssertEqual((l.offset..<(l.offset + l.count)).filter { store.effective[$0] != 0 }, want, "exactly k weights used")
        }
        XCTAssertEqual(ep.effectiveCounts(store), ep.keep)
    }

    /// Straight-through to |S|: dL/dS_i = sign(S_i)·dL/dZ_i with w_eff = W ⊙ Z, for selected and
    /// unselected entries.
    func testEdgePopupScoreGradientIsTheGateDerivative() throws {
        let net = try makeMLP(batchNormAffine: false) { EdgePopupScores(store: $0) }
        let store = net.store, ep = store.transform as! EdgePopupScores
        ep.keep = ep.layers.map { $0.count / 3 }
        let (x, r) = data(net)
        let g = analytic(net, x, r)
        let frozen = ep.stateTensors(store).flatMap(\.values)
        var frozenAt = 0, checked = 0
        for l in ep.layers {
            for j in 0..<l.count {
                let i = l.offset + j, w = frozen[frozenAt + j]
                guard store.mask[i] != 0 else { XCTAssertEqual(g[i], 0); continue }
                guard j % 3 == 0 else { continue }
                // Move the gate Z_i by ±h (the effective weight by ±h·W_i), selection unchanged.
                let e = store.effective[i], h: Float = 1e-2
                let gate: Float = e != 0 ? 1 : 0
                store.effective[i] = (gate + h) * w; let plus = objective(net, x, r)
                store.effective[i] = (gate - h) * w; let minus = objective(net, x, r)
                store.effective[i] = e
                let sign: Double = store.values[i] < 0 ? -1 : 1
                assertClose(sign * (plus - minus) / (2 * Double(h)), g[i], "\(l.name)[\(j)]")
                checked += 1
            }
            frozenAt += l.count
        }
        XCTAssertGreaterThan(checked, 50)
        for p in store.parameters where !p.maskable { XCTAssertTrue((0..<p.ref.count).allSatisfy { g[p.ref.offset + $0] == 0 }) }
    }
}
