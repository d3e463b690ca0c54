import XCTest
@testable import NN
import Tensor

final class TrainingTests: XCTestCase {
    /// 4 Gaussian clusters in 8 dimensions (class k centred at ±2 on axis k), shuffled.
    func clusters(count: Int, seed: UInt64) -> ([Float], [Int32]) {
        var rng = Xoshiro256(seed: seed)
        var x = [Float](), y = [Int32]()
        for _ in 0..<count {
            let k = rng.nextIndex(below: 4)
            for d in 0..<8 {
                let centre: Float = d == k ? 2 : (d == k + 4 ? -2 : 0)
                x.append(centre + (rng.nextFloat() - 0.5) * 2)
            }
            y.append(Int32(k))
        }
        return (x, y)
    }

    func testSmallModelLearnsSyntheticTask() throws {
        let net = try buildModel(.mlp, classes: 4, input: (8, 1, 1), hidden: [32], seed: 1)
        let (x, y) = clusters(count: 512, seed: 2)
        let loss = SoftmaxCrossEntropy()
        let sgd = SGD(momentum: 0.9, weightDecay: 0)
        var first: Float = 0, last: Float = 0
        for epoch in 0..<20 {
            var total: Float = 0
            for b in 0..<16 {
                net.store.zeroGradients()
                let logits = x.withUnsafeBufferPointer { net.forward(images: $0.baseAddress! + b * 32 * 8, batch: 32) }
                let (l, _) = y.withUnsafeBufferPointer { loss(logits, labels: $0.baseAddress! + b * 32, normalizer: 32, ctx: net.ctx) }
                net.backward(loss.gradient)
                sgd.step(net.store, learningRate: 0.05)
                total += l
            }
            if epoch == 0 { first = total / 16 }
            last = total / 16
        }
        XCTAssertLessThan(last, first * 0.3, "loss fell from \(first) to \(last)")
        let (tx, ty) = clusters(count: 400, seed: 99)
        net.training = false
        let logits = tx.withUnsafeBufferPointer { net.forward(images: $0.baseAddress!, batch: 400) }
        let correct = ty.withUnsafeBufferPointer { topKCorrect(logits, labels: $0.baseAddress!, k: 1) }
        XCTAssertGreaterThan(Double(correct) / 400, 0.9, "test accuracy (chance is 0.25)")
    }

    func testMaskedWeightsAndMomentumStayExactlyZeroFor1000Steps() throws {
        let net = try buildModel(.mlp, classes: 4, input: (8, 1, 1), hidden: [16, 16], seed: 3)
        let store = net.store
        var rng = Xoshiro256(seed: 4)
        for p in store.parameters where p.maskable {
            for i in p.ref.offset..<(p.ref.offset + p.ref.count) { store.mask[i] = rng.nextFloat() < 0.5 ? 1 : 0 }
        }
        store.applyMask()
        let masked = (0..<store.count).filter { store.mask[$0] == 0 }
        XCTAssertGreaterThan(masked.count, 100)
        let (x, y) = clusters(count: 64, seed: 5)
        let loss = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        let sgd = SGD(momentum: 0.9, nesterov: true, weightDecay: 5e-4)
        for step in 0..<1000 {
            store.zeroGradients()
            let logits = x.withUnsafeBufferPointer { net.forward(images: $0.baseAddress!, batch: 64) }
            _ = y.withUnsafeBufferPointer { loss(logits, labels: $0.baseAddress!, normalizer: 64, ctx: net.ctx) }
            net.backward(loss.gradient)
            sgd.step(store, learningRate: 0.05)
            let momentum = store.momentumInStoreLayout()
            for i in masked where store.values[i] != 0 || momentum[i] != 0 {
                return XCTFail("step \(step): masked entry \(i) is \(store.values[i]) / \(momentum[i])")
            }
        }
        // Unmasked weights did move.
        XCTAssertGreaterThan(store.momentumInStoreLayout().reduce(0) { $0 + abs($1) }, 0)
    }

    func testSGDMatchesPyTorchUpdateRule() {
        let store = ParameterStore()
        _ = store.register("w", shape: [2], maskable: true, initializer: .zeros)
        store.allocate(seed: 0)
        store.values[0] = 1; store.values[1] = -2
        store.gradients[0] = 0.5; store.gradients[1] = 0.25
        // Plain momentum, two steps by hand: g = ∇ + λw, v = μv + g, w -= ηv.
        var w: [Double] = [1, -2], v: [Double] = [0, 0]
        let sgd = SGD(momentum: 0.9, nesterov: false, weightDecay: 0.1)
        for _ in 0..<2 {
            sgd.step(store, learningRate: 0.1)
            for i in 0..<2 {
                let g = [0.5, 0.25][i] + 0.1 * w[i]
                v[i] = 0.9 * v[i] + g
                w[i] -= 0.1 * v[i]
            }
        }
        XCTAssertEqual(Double(store.values[0]), w[0], accuracy: 1e-6)
        XCTAssertEqual(Double(store.values[1]), w[1], accuracy: 1e-6)
        XCTAssertEqual(Double(store.momentumInStoreLayout()[1]), v[1], accuracy: 1e-6)
        // Nesterov: w -= η(g + μv).
        store.values[0] = 1
        store.setMomentum(store.parameters[0].ref, from: [0.5, Float(v[1])])
        SGD(momentum: 0.9, nesterov: true, weightDecay: 0).step(store, learningRate: 0.1)
        let vel = 0.9 * 0.5 + 0.5
        XCTAssertEqual(Double(store.values[0]), 1 - 0.1 * (0.5 + 0.9 * vel), accuracy: 1e-6)
    }

    /// The update visiting active entries only (dense gradient, or packed in active order; dense
    /// momentum, or packed) gives the same bits as the dense update over every entry, plain and
    /// Nesterov, over several steps and on two threads; so does the update over every entry
    /// asked of a store whose momentum is packed.
    func testActiveEntryUpdateEqualsTheDenseUpdateBitForBit() {
        for nesterov in [false, true] {
            func makeStore() -> (ParameterStore, ParameterRef) {
                let store = ParameterStore()
                let w = store.register("w", shape: [300, 600], maskable: true, initializer: .normal(std: 0.1))
                _ = store.register("b", shape: [300], maskable: false, initializer: .normal(std: 0.1))
                store.allocate(seed: 11)
                var rng = Xoshiro256(seed: 12)
                let m = store.maskValues(w)
                for i in 0..<w.count { m[i] = rng.nextDouble() < 0.2 ? 1 : 0 }
                store.applyMask()
                return (store, w)
            }
            let (dense, w) = makeStore(), (active, _) = makeStore(), (packed, _) = makeStore()
            let (packedV, _) = makeStore(), (packedBoth, _) = makeStore(), (denseOverPacked, _) = makeStore()
            let positions = (0..<w.count).filter { dense.mask[w.offset + $0] != 0 }.map { Int32($0) }
            for store in [packedV, packedBoth, denseOverPacked] { store.pack(w, positions: positions) }
            let sgd = SGD(momentum: 0.9, nesterov: nesterov, weightDecay: 5e-4)
            var rng = Xoshiro256(seed: 13)
            for _ in 0..<3 {
                let g = (0..<dense.count).map { _ in rng.nextFloat() - 0.5 }
                for store in [dense, active, packed, packedV, packedBoth, denseOverPacked] { g.withUnsafeBufferPointer { store.gradients.baseAddress!.update(from: $0.baseAddress!, count: g.count) } }
                var slot = positions.map { g[w.offset + Int($0)] }
                sgd.step(dense, learningRate: 0.05, gradientScale: 0.5, threads: 2)
                sgd.step(denseOverPacked, learningRate: 0.05, gradientScale: 0.5, threads: 2)
                sgd.step(active, learningRate: 0.05, gradientScale: 0.5, active: [positions], threads: 2)
                sgd.step(packedV, learningRate: 0.05, gradientScale: 0.5, active: [positions], threads: 2)
                slot.withUnsafeMutableBufferPointer { p in
                    for store in [packed, packedBoth] {
                        sgd.step(store, learningRate: 0.05, gradientScale: 0.5, active: [positions], packedGradients: [p.baseAddress!],
                                 threads: 2)
                    }
                }
            }
            XCTAssertEqual(packedBoth.packedMomentum(w)?.count, positions.count)
            for other in [active, packed, packedV, packedBoth, denseOverPacked] {
                XCTAssertEqual(Array(dense.values).map(\.bitPattern), Array(other.values).map(\.bitPattern), "weights, nesterov \(nesterov)")
                XCTAssertEqual(dense.momentumInStoreLayout().map(\.bitPattern), other.momentumInStoreLayout().map(\.bitPattern), "momentum, nesterov \(nesterov)")
            }
        }
    }

    func testLearningRateSchedules() {
        let step = LearningRateSchedule(base: 0.1, kind: .multiStep(milestones: [80, 120], gamma: 0.1), epochs: 160)
        XCTAssertEqual(step.rate(atEpoch: 79.9), 0.1, accuracy: 1e-7)
        XCTAssertEqual(step.rate(atEpoch: 80), 0.01, accuracy: 1e-7)
        XCTAssertEqual(step.rate(atEpoch: 150), 0.001, accuracy: 1e-7)
        let cosine = LearningRateSchedule(base: 0.1, kind: .cosine(minimum: 0.01), epochs: 10, warmupEpochs: 2)
        XCTAssertEqual(cosine.rate(atEpoch: 1), 0.05, accuracy: 1e-7)
        XCTAssertEqual(cosine.rate(atEpoch: 2), 0.1, accuracy: 1e-7)
        XCTAssertEqual(cosine.rate(atEpoch: 6), 0.055, accuracy: 1e-6)
        XCTAssertEqual(cosine.rate(atEpoch: 10), 0.01, accuracy: 1e-7)
        XCTAssertEqual(LearningRateSchedule(base: 0.3, kind: .constant, epochs: 5).rate(atEpoch: 4), 0.3)
    }

    func testBatchNormRunningStatisticsFollowPyTorch() {
        let store = ParameterStore()
        let bn = BatchNorm("bn", store: store, channels: 1)
        store.allocate(seed: 0)
        let x = Tensor(Shape(n: 4, c: 1))
        for (i, v) in [1, 2, 3, 6].enumerated() { x.data[i] = Float(v) }
        _ = bn.forward(x, Context())
        // mean 3, unbiased variance 14/3; r = 0.9·r + 0.1·stat.
        XCTAssertEqual(bn.runningMean[0], 0.3, accuracy: 1e-6)
        XCTAssertEqual(bn.runningVar[0], 0.9 + 0.1 * 14 / 3, accuracy: 1e-6)
        let eval = Context()
        eval.training = false
        let y = bn.forward(x, eval)
        XCTAssertEqual(y.data[0], (1 - 0.3) / (bn.runningVar[0] + 1e-5).squareRoot(), accuracy: 1e-5)
    }
}
