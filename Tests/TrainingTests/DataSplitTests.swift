import Comm
import Datasets
import Foundation
import Logging
import XCTest
@testable import Training

/// Labels come from class names: the train and test splits (and a checkpoint) must agree on them.
final class DataSplitTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "splits-\(UUID().uuidString)"
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    /// `<root>/<name>/{train,test}/<class>/0.jpg, 1.jpg`.
    private func makeFolder(_ name: String, train: [String], test: [String]) throws -> String {
        let dir = root + "/" + name
        for (split, classes) in [("train", train), ("test", test)] {
            for (k, cls) in classes.enumerated() {
                try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/\(cls)", withIntermediateDirectories: true)
                for i in 0..<2 {
                    let pixels = (0..<(8 * 8 * 3)).map { UInt8(($0 * 7 + k * 40 + i * 5) % 256) }
                    let jpg = try JPEG.encode(pixels: pixels, width: 8, height: 8, quality: 90)
                    FileManager.default.createFile(atPath: "\(dir)/\(split)/\(cls)/\(i).jpg", contents: Data(jpg))
                }
            }
        }
        return dir
    }

    private func config(_ data: String) throws -> TrainConfig {
        var c = TrainConfig()
        for o in ["model=mlp", "dataset=imagefolder", "data_path=\(data)", "input=3x8x8", "hidden=[8]", "batch_size=2",
                  "classes=3", "epochs=1", "sparsity=0.5", "log_every=1000"] {
            try c.apply(override: o)
        }
        c.output = root + "/run"
        return c
    }

    func testSplitsWithDifferentClassesAreRefused() throws {
        let missing = try makeFolder("missing", train: ["ant", "bee", "cat"], test: ["ant", "cat"])
        XCTAssertThrowsError(try Trainer(config: config(missing), communicator: LocalCommunicator(), logger: Logger(label: "t"))) {
            XCTAssertTrue("\($0)".contains("missing from the test split: bee"), "\($0)")
        }
        let extra = try makeFolder("extra", train: ["ant", "bee"], test: ["ant", "bee", "cat"])
        XCTAssertThrowsError(try Trainer(config: config(extra), communicator: LocalCommunicator(), logger: Logger(label: "t"))) {
            XCTAssertTrue("\($0)".contains("only in the test split: cat"), "\($0)")
        }
    }

    func testACheckpointIsRefusedOnDataWithOtherClasses() throws {
        let a = try makeFolder("a", train: ["ant", "bee", "cat"], test: ["ant", "bee", "cat"])
        let b = try makeFolder("b", train: ["ant", "bee", "dog"], test: ["ant", "bee", "dog"])
        let t = try Trainer(config: config(a), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        try t.prepare()
        let ck = t.checkpoint()
        let other = try Trainer(config: config(b), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        XCTAssertThrowsError(try other.load(ck, path: "ck")) {
            XCTAssertTrue("\($0)".contains("trained on classes ant, bee, cat, the data has ant, bee, dog"), "\($0)")
        }
        let same = try Trainer(config: config(a), communicator: LocalCommunicator(), logger: Logger(label: "t"))
        XCTAssertNoThrow(try same.load(ck, path: "ck"))
    }
}

/// An initial mask that cuts off classes is refused unless asked for.
final class DisconnectedMaskTests: XCTestCase {
    private func trainer(_ overrides: [String]) throws -> Trainer {
        var c = TrainConfig()
        for o in ["model=resnet20", "input=3x8x8", "synthetic_train=64", "synthetic_test=32", "batch_size=32", "epochs=1",
                  "log_every=1000"] + overrides {
            try c.apply(override: o)
        }
        c.output = NSTemporaryDirectory() + "disconnected-\(UUID().uuidString)"
        return try Trainer(config: c, communicator: LocalCommunicator(), logger: Logger(label: "t"))
    }

    func testMasksThatCutOffClassesAreErrorsUnlessAllowed() throws {
        XCTAssertThrowsError(try trainer(["density_method=pyramidal", "sparsity=0.99"])) {
            XCTAssertTrue("\($0)".contains("layers without any weight: fc.weight; 10 of 10 classes are cut off"), "\($0)")
        }
        XCTAssertThrowsError(try trainer(["sparsity=0.9999"])) {
            XCTAssertTrue("\($0)".contains("classes are cut off"), "\($0)")
            XCTAssertTrue("\($0)".contains("flow: random-addition"), "\($0)")
        }
        XCTAssertNoThrow(try trainer(["density_method=pyramidal", "sparsity=0.99", "allow_disconnected=true"]))
        XCTAssertNoThrow(try trainer(["density_method=pyramidal", "sparsity=0.99", "flow=random-addition"]))
    }
}
