import Comm
import Foundation
import Logging
import XCTest
@testable import Training

final class DivergenceTests: XCTestCase {
    private func config(_ dir: String, lr: Double, epochs: Int) throws -> TrainConfig {
        var c = TrainConfig()
        for o in ["model=mlp", "input=3x8x8", "hidden=[32]", "batch_size=32", "synthetic_train=256", "synthetic_test=64",
                  "sparsity=0.8", "lr=\(lr)", "epochs=\(epochs)", "log_every=1000"] {
            try c.apply(override: o)
        }
        c.output = dir
        return c
    }

    /// A prepared 1-epoch MLP trainer (lr 0.05) in a new directory.
    private func preparedTrainer() throws -> (Trainer, String) {
        let dir = NSTemporaryDirectory() + "diverge-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let t = try Trainer(config: try config(dir, lr: 0.05, epochs: 1), communicator: LocalCommunicator(), logger: Logger(label: "test"))
        try t.prepare()
        return (t, dir)
    }

    func testADivergingRunStopsAndKeepsTheLastGoodCheckpoint() throws {
        let (good, dir) = try preparedTrainer()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try good.run()
        let path = dir + "/" + Trainer.checkpointName
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        // The same run resumed with a learning rate that sends the loss to NaN.
        var cfg = try config(dir, lr: 1e6, epochs: 3)
        cfg.output = dir
        let bad = try Trainer(config: cfg, communicator: LocalCommunicator(), resume: true, logger: Logger(label: "test"))
        try bad.prepare()
        XCTAssertThrowsError(try bad.run()) { error in
            XCTAssertTrue(error is TrainingDiverged, "\(error)")
            XCTAssertTrue("\(error)".contains("the loss became"), "\(error)")
            XCTAssertTrue("\(error)".contains("last good checkpoint (epoch 1)"), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before, "the good checkpoint is untouched")
    }

    func testCheckpointsWithNonFiniteValuesOrNonBinaryMasksAreRefused() throws {
        let (t, dir) = try preparedTrainer()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ck = t.checkpoint()
        XCTAssertNoThrow(try t.load(ck, path: "ok"))
        var nan = ck
        let p = nan.tensors.firstIndex { $0.name.hasPrefix("param/") }!
        nan.tensors[p].values[0] = .nan
        XCTAssertThrowsError(try t.load(nan, path: "nan.safetensors")) { XCTAssertTrue("\($0)".contains("1 non-finite values"), "\($0)") }
        for epoch in ["-3", "7", "x"] {
            var bad = ck
            bad.metadata["epoch"] = epoch
            XCTAssertThrowsError(try t.restore(bad, path: "epoch.safetensors"), epoch)
        }
        var mask = ck
        let m = mask.tensors.firstIndex { $0.name.hasPrefix("mask/") }!
        mask.tensors[m].values[0] = 0.5
        XCTAssertThrowsError(try t.load(mask, path: "mask.safetensors")) { XCTAssertTrue("\($0)".contains("other than 0 and 1"), "\($0)") }
    }

    func testADamagedLastCheckpointFallsBackToThePreviousOne() throws {
        let dir = NSTemporaryDirectory() + "recover-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try Trainer(config: try config(dir, lr: 0.05, epochs: 2), communicator: LocalCommunicator(), logger: Logger(label: "test"))
        try t.prepare()
        try t.run()
        let last = dir + "/" + Trainer.checkpointName, previous = dir + "/" + Trainer.previousCheckpointName
        XCTAssertEqual(try Checkpoint.read(from: previous).metadata["epoch"], "1", "the last two are kept")
        // One flipped bit in the tensor data.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: last))
        bytes[bytes.count - 5] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: last))
        XCTAssertThrowsError(try Checkpoint.read(from: last)) { XCTAssertTrue("\($0)".contains("fails the checksum"), "\($0)") }
        let resumed = try Trainer(config: try config(dir, lr: 0.05, epochs: 2), communicator: LocalCommunicator(), resume: true,
                                  logger: Logger(label: "test"))
        XCTAssertEqual(resumed.completedEpochs, 1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoint.damaged.safetensors"))
        // The last one missing altogether (a crash between the two renames): the previous one too.
        try FileManager.default.removeItem(atPath: dir + "/checkpoint.damaged.safetensors")
        let again = try Trainer(config: try config(dir, lr: 0.05, epochs: 2), communicator: LocalCommunicator(), resume: true,
                                logger: Logger(label: "test"))
        XCTAssertEqual(again.completedEpochs, 1)
    }
}

final class WatchdogTests: XCTestCase {
    func testTheDeadlineFollowsTheFloorTheMedianStepAndTheGrace() {
        let w = Watchdog(rank: 3, floor: 2, multiple: 20)
        XCTAssertEqual(w.deadline, 2)
        for _ in 0..<5 { w.beat("epoch 1 step 1", stepSeconds: 0.5) }
        XCTAssertEqual(w.deadline, 10, "20 median steps")
        w.beat("epoch 1 step 2")
        XCTAssertNil(w.expired(now: Date().addingTimeInterval(9)))
        let message = w.expired(now: Date().addingTimeInterval(11))
        XCTAssertTrue(message?.contains("rank 3 made no progress for 11 s (deadline 10 s) after epoch 1 step 2") ?? false, message ?? "nil")
        w.expectDelay(floors: 1, at: "a checkpoint")
        XCTAssertNil(w.expired(now: Date().addingTimeInterval(11)), "grace of one floor")
        XCTAssertNotNil(w.expired(now: Date().addingTimeInterval(13)))
    }
}
