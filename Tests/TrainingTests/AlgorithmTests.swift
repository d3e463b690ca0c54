import Comm
import Foundation
import Logging
import NN
import XCTest
@testable import Training

/// IMP and RiGL runs on one process: every mask change follows its rule, and runs stopped between
/// changes and resumed end bit-identical to uninterrupted ones.
final class AlgorithmTests: XCTestCase {
    /// MLP 192-32-10 on synthetic data: 8 steps per epoch.
    func config(_ dir: String, _ extra: [String]) throws -> TrainConfig {
        var c = TrainConfig()
        for o in ["model=mlp", "input=3x8x8", "hidden=[32]", "batch_size=32", "synthetic_train=256", "synthetic_test=64",
                  "density_method=erk", "lr=0.05", "log_every=1000"] + extra {
            try c.apply(override: o)
        }
        c.output = dir
        return c
    }

    func makeDir() throws -> String {
        let dir = NSTemporaryDirectory() + "algorithms-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func trainer(_ c: TrainConfig, resume: Bool = false) throws -> Trainer {
        let t = try Trainer(config: c, communicator: LocalCommunicator(), resume: resume, logger: Logger(label: "test"))
        try t.prepare()
        return t
    }

    /// Masked weights and momentum are +0.
    func assertMaskedEntriesArePositiveZero(_ t: Trainer, file: StaticString = #filePath, line: UInt = #line) {
        let store = t.network.store, momentum = store.momentumInStoreLayout()
        for p in store.parameters where p.maskable {
            for i in p.ref.offset..<(p.ref.offset + p.ref.count) where store.mask[i] == 0 {
                if store.values[i].bitPattern != 0 || momentum[i].bitPattern != 0 {
                    XCTFail("\(p.name)[\(i - p.ref.offset)] is masked but not +0", file: file, line: line)
                    return
                }
            }
        }
    }

    func testIMPPrunesGloballyOnItsPlanAndRewinds() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try config(dir, ["algorithm=imp", "sparsity=0.5", "final_sparsity=0.8", "imp_cycle_epochs=2", "imp_final_epochs=1"])
        XCTAssertEqual(c.impPlan.cycles, 5)   // 0.5·0.8^4 = 0.2048 > 0.2, 0.5·0.8^5 < 0.2
        XCTAssertEqual(c.totalEpochs, 11)
        let t = try trainer(c)
        let n = t.masks.maskableTotal
        let start = t.masks.activeTotal
        let initial = Array(t.network.store.values)
        var previousMask = Array(t.network.store.mask)
        var changes = 0
        // Run cycle by cycle, checking each change as it lands.
        for cycle in 1...5 {
            try t.run(stopAfter: 2 * cycle)
            XCTAssertEqual(t.events.count, cycle)
            let e = t.events.last!
            XCTAssertEqual(e.step, cycle * 2 * 8)
            let want = cycle < 5 ? Int((Double(start) * pow(0.8, Double(cycle))).rounded()) : Int((0.2 * Double(n)).rounded())
            XCTAssertEqual(t.masks.activeTotal, want, "cycle \(cycle)")
            XCTAssertEqual(e.grown, 0, "IMP masks only shrink")
            // The cycle's last epoch reports the trained network, before the prune and rewind.
            XCTAssertGreaterThan(t.history.last!.global_density, e.density)
            XCTAssertEqual(t.history.last!.mask_changes, 1)
            let mask = Array(t.network.store.mask)
            XCTAssertFalse(zip(previousMask, mask).contains { $0 == 0 && $1 != 0 }, "an entry came back")
            previousMask = mask
            changes += 1
            // Rewound to the initial weights on the new mask; momentum cleared.
            let store = t.network.store, momentum = store.momentumInStoreLayout()
            for i in 0..<store.count {
                let want = store.mask[i] == 0 && store.parameters.first { $0.ref.offset <= i && i < $0.ref.offset + $0.ref.count }!.maskable
                    ? 0 : initial[i]
                XCTAssertEqual(store.values[i], want, "entry \(i) rewound")
                XCTAssertEqual(momentum[i].bitPattern, 0)
            }
        }
        try t.run()
        XCTAssertEqual(changes, 5)
        XCTAssertEqual(t.history.count, 11)
        XCTAssertEqual(t.history.last!.global_density, 0.2, accuracy: 0.5 / Double(n))
        XCTAssertEqual(t.history.last!.phase, "imp final retrain")
        assertMaskedEntriesArePositiveZero(t)
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.contains("\"event\":\"mask_change\"") }.count, 5)
        XCTAssertEqual(lines.filter { $0.contains("\"event\":\"phase\"") }.count, 6)
    }

    func testRigLKeepsEveryLayerDensityAndMovesWeights() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try trainer(try config(dir, ["algorithm=rigl", "sparsity=0.8", "epochs=3", "rigl_update_every=4", "rigl_end=0.9"]))
        let counts = t.masks.activeCounts
        try t.run()
        // 24 steps, updates after steps 4, 8, …, 20 (rigl_end: step 21).
        XCTAssertEqual(t.events.map(\.step), [4, 8, 12, 16, 20])
        XCTAssertEqual(t.masks.activeCounts, counts)
        XCTAssertTrue(t.events.allSatisfy { $0.dropped == $0.grown }, "per layer as many grown as dropped")
        XCTAssertGreaterThan(t.events.first!.grown, 0)
        XCTAssertEqual(t.history.map(\.mask_changes), [2, 2, 1])
        XCTAssertTrue(t.history.allSatisfy { $0.bytes_dense_gradient > 0 })
        assertMaskedEntriesArePositiveZero(t)
    }

    /// Sparse kernels (forward, input gradient, weight gradient at the mask only) against the
    /// dense GEMMs on the masked weights: 56 steps of RiGL with 6 mask changes, same masks, weights
    /// within 1e-5.
    func testSparseKernelsTrainLikeTheDenseMaskedEngineAcrossRigLChanges() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let common = ["algorithm=rigl", "sparsity=0.8", "epochs=7", "rigl_update_every=8", "rigl_end=0.9", "hidden=[48,40]"]
        for sub in ["/sparse", "/dense"] { try FileManager.default.createDirectory(atPath: dir + sub, withIntermediateDirectories: true) }
        let sparse = try trainer(try config(dir + "/sparse", common + ["sparse_kernels=on"]))
        let dense = try trainer(try config(dir + "/dense", common + ["sparse_kernels=off"]))
        try sparse.run()
        try dense.run()
        XCTAssertEqual(sparse.events.count, 6)
        XCTAssertEqual(sparse.events.map(\.step), dense.events.map(\.step))
        let reports = sparse.network.body.kernelReports
        XCTAssertEqual(reports.count, 3)
        XCTAssertTrue(reports.allSatisfy { $0.forward == .sparse && $0.weightGradient == .sparse },
                      "every masked layer ran sparse: \(reports)")
        XCTAssertTrue(dense.network.body.kernelReports.allSatisfy { $0.forward == .dense })
        let weights = sparse.network.store.parameters.filter(\.maskable).map(\.ref.index)
        XCTAssertEqual(weights.map { sparse.network.store.gradientPlacement[$0] }, [.packed, .packed, .packed],
                       "the last step's weight gradients were born packed")
        let a = sparse.network.store, b = dense.network.store
        XCTAssertEqual(Array(a.mask), Array(b.mask), "same masks after every change")
        var worst: Float = 0
        for i in 0..<a.count { worst = max(worst, abs(a.values[i] - b.values[i])) }
        XCTAssertLessThanOrEqual(worst, 1e-5)
        XCTAssertGreaterThan(worst, 0, "the two engines round differently; identical results would mean one path ran twice")
        assertMaskedEntriesArePositiveZero(sparse)
    }

    func testPruneAndRewireFollowsTheCubicScheduleToTheFinalDensityExactly() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try config(dir, ["algorithm=rigl", "sparsity=0.7", "final_sparsity=0.9", "epochs=4", "rigl_update_every=4",
                                 "prune_end=0.5"])
        let t = try trainer(c)
        let n = Double(t.masks.maskableTotal)
        try t.run()
        // 32 steps: prunes after steps 4, 8, 12, 16 (prune_end 16), rewiring before step 24.
        let prunes = t.events.filter { $0.kind.hasPrefix("prune") }
        XCTAssertEqual(prunes.map(\.step), [4, 8, 12, 16])
        for (k, e) in prunes.enumerated() {
            let d = 0.1 + 0.2 * pow(1 - Double(k + 1) / 4, 3)
            XCTAssertEqual(Double(Int((d * n).rounded())) / n, e.density, accuracy: 1e-12, "prune \(k + 1)")
        }
        XCTAssertEqual(t.masks.activeTotal, Int((0.1 * n).rounded()))
        XCTAssertEqual(t.events.map(\.step), [4, 8, 12, 16, 20])
        assertMaskedEntriesArePositiveZero(t)
    }

    func assertBitIdentical(_ a: Trainer, _ b: Trainer, file: StaticString = #filePath, line: UInt = #line) {
        let x = a.network.store, y = b.network.store
        XCTAssertEqual(Array(x.values).map(\.bitPattern), Array(y.values).map(\.bitPattern), "weights", file: file, line: line)
        XCTAssertEqual(x.momentumInStoreLayout().map(\.bitPattern), y.momentumInStoreLayout().map(\.bitPattern), "momentum", file: file, line: line)
        XCTAssertEqual(Array(x.mask), Array(y.mask), "mask", file: file, line: line)
    }

    /// Stops after `stop` epochs, resumes from the checkpoint, and compares with an uninterrupted run.
    func checkResume(_ extra: [String], stop: Int) throws {
        let a = try makeDir(), b = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let full = try trainer(try config(a, extra))
        try full.run()
        let first = try trainer(try config(b, extra))
        try first.run(stopAfter: stop)
        let rest = try trainer(try config(b, extra), resume: true)
        XCTAssertEqual(rest.completedEpochs, stop)
        try rest.run()
        XCTAssertFalse(full.events.isEmpty)
        assertBitIdentical(full, rest)
    }

    func testIMPResumedInTheMiddleOfACycleEndsBitIdentical() throws {
        // Cycles of 2 epochs: stop after epoch 3 is mid-cycle 2 (rewind point epoch 1 recorded).
        try checkResume(["algorithm=imp", "sparsity=0.5", "final_sparsity=0.75", "imp_cycle_epochs=2", "imp_final_epochs=1",
                         "imp_rewind_epoch=1"], stop: 3)
    }

    func testRigLResumedBetweenUpdatesEndsBitIdentical() throws {
        // Updates every 6 steps with 8 steps per epoch: epoch 2 ends between the updates after steps 12 and 18.
        try checkResume(["algorithm=rigl", "sparsity=0.7", "final_sparsity=0.85", "epochs=4", "rigl_update_every=6"], stop: 2)
    }

    func testAlgorithmKeysAreCheckedOnOneLine() throws {
        func fails(_ overrides: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
            do {
                var c = TrainConfig()
                for o in overrides { try c.apply(override: o) }
                try c.validate(worldSize: 1)
                XCTFail("accepted \(overrides)", file: file, line: line)
            } catch {
                XCTAssertTrue("\(error)".contains(message), "\(overrides): \(error)", file: file, line: line)
                XCTAssertFalse("\(error)".contains("\n"), file: file, line: line)
            }
        }
        fails(["rigl_update_every=10"], "rigl_update_every belongs to algorithm rigl, not fixed")
        fails(["algorithm=rigl", "imp_cycle_epochs=3"], "imp_cycle_epochs belongs to algorithm imp, not rigl; keys of rigl:")
        fails(["algorithm=imp", "final_sparsity=0.5", "sparsity=0.9"], "final_sparsity must be above sparsity")
        fails(["algorithm=imp"], "algorithm imp needs final_sparsity")
        fails(["algorithm=imp", "final_sparsity=0.95", "epochs=3"], "epochs does not apply to algorithm imp")
        fails(["algorithm=imp", "final_sparsity=0.95", "imp_cycle_epochs=0"], "imp_cycle_epochs must be at least 1")
        fails(["algorithm=imp", "final_sparsity=0.95", "imp_prune_fraction=0"], "imp_prune_fraction must be in (0, 1)")
        fails(["algorithm=rigl", "final_sparsity=0.5", "sparsity=0.9"], "final_sparsity must be in [sparsity, 1)")
        fails(["algorithm=rigl", "rigl_update_every=0"], "rigl_update_every must be at least 1")
        fails(["algorithm=rigl", "prune_end=0.5"], "prune_end applies only to prune-and-rewire")
        fails(["algorithm=str", "final_sparsity=0.9"], "final_sparsity belongs to algorithm imp or rigl or edge-popup, not str")
        fails(["algorithm=edge-popup"], "algorithm edge-popup needs final_sparsity")
        fails(["algorithm=edge-popup", "final_sparsity=0.9", "epochs=3"], "epochs does not apply to algorithm edge-popup")
        fails(["algorithm=edge-popup", "final_sparsity=0.9", "popup_levels=0"], "popup_levels must be at least 1")
        fails(["algorithm=edge-popup", "final_sparsity=0.9", "popup_level_epochs=0"], "popup_level_epochs must be at least 1")
        fails(["algorithm=edge-popup", "final_sparsity=0.5", "sparsity=0.9"], "final_sparsity must be in [sparsity, 1)")
        fails(["algorithm=edge-popup", "final_sparsity=0.95", "density_method=er-snip"], "density_method must be one of uniform")
        fails(["algorithm=str", "str_s_init=.nan"], "str_s_init must be a finite number")
        fails(["algorithm=magic"], "algorithm must be one of fixed, imp, rigl, str, edge-popup")
        // A schedule without a mask update is refused when the run's length is known.
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try trainer(try config(dir, ["algorithm=rigl", "epochs=2", "rigl_update_every=100"]))) {
            XCTAssertTrue("\($0)".contains("rigl_update_every 100 leaves no mask update"), "\($0)")
        }
        XCTAssertThrowsError(try trainer(try config(dir, ["algorithm=rigl", "epochs=2", "final_sparsity=0.95", "rigl_update_every=10",
                                                           "prune_end=0.5"]))) {
            XCTAssertTrue("\($0)".contains("prune_end 0.5 leaves no pruning step"), "\($0)")
        }
        // The written config of each algorithm reads back the same and validates.
        for extra in [["algorithm=imp", "final_sparsity=0.95"], ["algorithm=rigl", "final_sparsity=0.95", "prune_end=0.5"],
                      ["algorithm=str", "str_s_init=-20"], ["algorithm=edge-popup", "final_sparsity=0.95", "popup_levels=2"]] {
            let c = try config(dir, extra)
            let back = try TrainConfig.parse(yaml: c.yaml())
            XCTAssertEqual(back, c)
            XCTAssertNoThrow(try back.validate(worldSize: 1))
        }
    }
}
