import Comm
import Foundation
import Logging
import NN
import Sparsity
import XCTest
@testable import Training

/// STR and edge-popup runs on one process (helpers from `AlgorithmTests`).
extension AlgorithmTests {
    func testSTRMaskOnlyShrinksInsideTheERMaskAndHoldsTheWeightsAboveThreshold() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try trainer(try config(dir, ["algorithm=str", "sparsity=0.5", "epochs=4", "str_s_init=-3", "weight_decay=1e-3"]))
        let str = t.network.store.transform as! SoftThreshold
        var previous = Array(t.network.store.mask)
        var densities: [Double] = []
        for epoch in 1...4 {
            try t.run(stopAfter: epoch)
            XCTAssertEqual(t.events.count, epoch, "one threshold change per epoch")
            XCTAssertEqual(t.events.last!.grown, 0)
            let mask = Array(t.network.store.mask)
            XCTAssertFalse(zip(previous, mask).contains { $0 == 0 && $1 != 0 }, "never outside the earlier mask")
            previous = mask
            // Every active weight is above its layer's threshold, as of the change.
            assertMaskedEntriesArePositiveZero(t)
            densities.append(t.masks.globalDensity)
            XCTAssertLessThanOrEqual(t.history.last!.effective_density, t.history.last!.global_density)
        }
        XCTAssertEqual(densities, densities.sorted(by: >), "sparsity only grows")
        XCTAssertLessThan(densities.last!, 0.5, "the threshold removed weights")
        // The learned thresholds moved (loss gradient and weight decay).
        XCTAssertTrue(str.thresholds.contains { t.network.store.value($0)[0] != -3 })
    }

    func testSTRInitialThresholdMatchesThePaperRunAndScalesWithTheRunLength() throws {
        // The paper's run: 100 epochs of 196 steps, 5 warm-up epochs, cosine 0.1 → 0, μ 0.9.
        var c = TrainConfig()
        for o in ["algorithm=str", "epochs=100", "warmup_epochs=5", "lr=0.1", "min_lr=0", "momentum=0.9"] { try c.apply(override: o) }
        XCTAssertEqual(STRPolicy.paperLearningRateSum, 999.6, accuracy: 1e-9)
        // The LR changes per step here (per epoch there), so Σ η differs by about 2%: compare
        // ln(|s_0|/9) / ln(200/9), the fraction of the paper's Σ η, with 1.
        func fraction(_ s: Double) -> Double { log(-s / 9) / log(200.0 / 9) }
        XCTAssertEqual(fraction(Trainer.strInitialThreshold(c, stepsPerEpoch: 196)), 1, accuracy: 0.03)
        // A fifth of the budget: about −9·22.2^0.2 ≈ −17 (ALGORITHMS §5.2).
        try c.apply(override: "epochs=20")
        try c.apply(override: "warmup_epochs=1")
        XCTAssertEqual(fraction(Trainer.strInitialThreshold(c, stepsPerEpoch: 196)), 0.2, accuracy: 0.01)
        try c.apply(override: "str_s_init=-50")
        XCTAssertEqual(Trainer.strInitialThreshold(c, stepsPerEpoch: 196), -50)
    }

    func testEdgePopupUsesExactlyKWeightsPerLayerInEveryLevelAndEndsOnTheTarget() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try config(dir, ["algorithm=edge-popup", "sparsity=0.5", "final_sparsity=0.9", "popup_levels=3",
                                 "popup_level_epochs=1", "density_method=balanced"])
        XCTAssertEqual(c.totalEpochs, 3)
        let t = try trainer(c)
        let store = t.network.store, scores = store.transform as! EdgePopupScores
        XCTAssertTrue(t.network.batchNorms.allSatisfy { $0.weight == nil })
        let frozen = scores.stateTensors(store).flatMap(\.values)
        let start = t.masks.activeCounts
        let layers = MaskableLayer.all(in: store)
        let targets = nonZeroCounts(layers, densities: try layerwiseDensities(layers, density: 0.1, method: .balanced), density: 0.1)
        for level in 1...3 {
            try t.run(stopAfter: level)
            let want = EdgePopupPolicy.keep(level: level, levels: 3, start: start, targets: targets)
            XCTAssertEqual(scores.keep, want, "level \(level)")
            // The evaluation's forward pass used exactly k weights per layer, all inside the ER mask.
            XCTAssertEqual(scores.effectiveCounts(store), want)
            XCTAssertEqual(t.history.last!.phase, "edge-popup level \(level)/3")
            for (l, positions) in zip(layers, scores.selected) {
                XCTAssertTrue(positions.allSatisfy { store.mask[l.offset + Int($0)] != 0 })
            }
        }
        XCTAssertTrue(zip(start, targets).allSatisfy { $0 >= $1 } && zip(start, targets).contains { $0 > $1 })
        // After the last step the final subnetwork is the mask: the target count in every layer.
        XCTAssertEqual(t.events.count, 1)
        XCTAssertEqual(t.masks.activeCounts, targets)
        XCTAssertEqual(t.masks.activeTotal, Int((0.1 * Double(t.masks.maskableTotal)).rounded()))
        XCTAssertEqual(scores.stateTensors(store).flatMap(\.values), frozen, "weights stay frozen")
        for p in store.parameters where !p.maskable { XCTAssertTrue((0..<p.ref.count).allSatisfy { store.value(p.ref)[$0] == 0 }) }
        assertMaskedEntriesArePositiveZero(t)
    }

    func testSTRResumedMidRunEndsBitIdentical() throws {
        try checkResume(["algorithm=str", "sparsity=0.5", "epochs=3", "str_s_init=-3", "weight_decay=1e-3"], stop: 1)
    }

    func testEdgePopupResumedInTheMiddleOfALevelEndsBitIdentical() throws {
        try checkResume(["algorithm=edge-popup", "sparsity=0.5", "final_sparsity=0.8", "popup_levels=2", "popup_level_epochs=2"], stop: 1)
    }
}

extension AlgorithmTests {
    /// `mask_from: snip` starts from SNIP's own mask: the ⌊d·N⌉ largest |∂L/∂w ⊙ w| on the first batch.
    func testMaskFromSNIPKeepsExactlyTheTopSensitivities() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try config(dir, ["mask_from=snip", "sparsity=0.9", "epochs=1"])
        // The reference: the same initial network, scored by hand with a full sort.
        let reference = try Trainer(config: c, communicator: LocalCommunicator(), logger: Logger(label: "test"))
        let store = reference.network.store
        let batch = try reference.snipData()[0]
        let loss = SoftmaxCrossEntropy()
        store.zeroGradients()
        let logits = batch.images.withUnsafeBufferPointer { reference.network.forward(images: $0.baseAddress!, batch: batch.labels.count) }
        _ = batch.labels.withUnsafeBufferPointer { loss(logits, labels: $0.baseAddress!, normalizer: Float(batch.labels.count), ctx: reference.network.ctx) }
        reference.network.backward(loss.gradient)
        let positions = reference.layers.flatMap { $0.offset..<($0.offset + $0.count) }
        let score = { (i: Int) in abs(store.gradients[i] * store.values[i]) }
        let keep = Int((0.1 * Double(positions.count)).rounded())
        let want = Set(positions.sorted { score($0) != score($1) ? score($0) > score($1) : $0 < $1 }.prefix(keep))

        let t = try trainer(c)
        XCTAssertEqual(t.masks.activeTotal, keep)
        XCTAssertEqual(Set(positions.filter { t.network.store.mask[$0] != 0 }), want)
        assertMaskedEntriesArePositiveZero(t)
    }
}
