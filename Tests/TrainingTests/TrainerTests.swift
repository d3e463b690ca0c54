import Comm
import Foundation
import Logging
import XCTest
@testable import Training

final class TrainerTests: XCTestCase {
    func config(_ dir: String, epochs: Int = 2) throws -> TrainConfig {
        var c = TrainConfig()
        for o in ["model=mlp", "input=3x8x8", "hidden=[32]", "batch_size=32", "synthetic_train=256", "synthetic_test=64",
                  "sparsity=0.8", "density_method=erk", "lr=0.05", "epochs=\(epochs)", "log_every=1000"] {
            try c.apply(override: o)
        }
        c.output = dir
        return c
    }

    func makeDir() throws -> String {
        let dir = NSTemporaryDirectory() + "trainer-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func testDensityStaysAndMaskedWeightsStayZero() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try Trainer(config: try config(dir), communicator: LocalCommunicator(), logger: Logger(label: "test"))
        try t.prepare()
        let store = t.network.store
        let history = try t.run()
        XCTAssertEqual(history.count, 2)
        for m in history { XCTAssertEqual(m.global_density, 0.2, accuracy: 1e-4) }
        let momentum = store.momentumInStoreLayout()
        for p in store.parameters where p.maskable {
            for i in p.ref.offset..<(p.ref.offset + p.ref.count) where store.mask[i] == 0 {
                XCTAssertEqual(store.values[i].bitPattern, 0)
                XCTAssertEqual(momentum[i].bitPattern, 0)
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/metrics.jsonl"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + Trainer.checkpointName))
    }

    func testResumedRunEndsBitIdenticalToAnUninterruptedOne() throws {
        let a = try makeDir(), b = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let full = try Trainer(config: try config(a, epochs: 3), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        try full.prepare()
        try full.run()
        let first = try Trainer(config: try config(b, epochs: 3), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        try first.prepare()
        try first.run(stopAfter: 1)   // as if killed after epoch 1
        let rest = try Trainer(config: try config(b, epochs: 3), communicator: LocalCommunicator(), resume: true, logger: Logger(label: "t"))
        XCTAssertEqual(rest.completedEpochs, 1)
        try rest.prepare()
        try rest.run()
        let same = Array(full.network.store.values).map(\.bitPattern) == Array(rest.network.store.values).map(\.bitPattern)
            && full.network.store.momentumInStoreLayout().map(\.bitPattern) == rest.network.store.momentumInStoreLayout().map(\.bitPattern)
        XCTAssertTrue(same, "resumed weights and momentum must equal the uninterrupted run's bit for bit")
    }

    func testResumingWithAnotherModelIsRefused() throws {
        let dir = try makeDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try Trainer(config: try config(dir, epochs: 1), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        try t.prepare()
        try t.run()
        var other = try config(dir, epochs: 2)
        other.hidden = [48]
        XCTAssertThrowsError(try Trainer(config: other, communicator: LocalCommunicator(), resume: true, logger: Logger(label: "t"))) {
            XCTAssertTrue("\($0)".contains("another model"), "\($0)")
        }
    }
}
