import XCTest
@testable import Training

final class ConfigTests: XCTestCase {
    func testYAMLAndOverridesResolveAndRoundTrip() throws {
        var c = try TrainConfig.parse(yaml: """
            model: vgg16
            sparsity: 0.99
            weight_decay: 5e-4
            milestones: [0.3, 0.6]
            bn: sync
            """)
        XCTAssertEqual(c.model, "vgg16")
        XCTAssertEqual(c.sparsity, 0.99)
        XCTAssertEqual(c.weightDecay, 5e-4)
        XCTAssertEqual(c.milestones, [0.3, 0.6])
        try c.apply(override: "epochs=7")
        try c.apply(override: "hidden=[10, 20]")
        try c.apply(override: "output=runs/a b")
        XCTAssertEqual(c.epochs, 7)
        XCTAssertEqual(c.hidden, [10, 20])
        XCTAssertEqual(c.output, "runs/a b")
        XCTAssertEqual(try TrainConfig.parse(yaml: c.yaml()), c, "written config reads back the same")
    }

    func testUnknownKeysAndBadValuesAreOneLineErrors() {
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "epohcs: 3")) {
            XCTAssertTrue("\($0)".contains("unknown config key 'epohcs'") && "\($0)".contains("epochs"), "\($0)")
        }
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "epochs: many")) { XCTAssertTrue("\($0)".contains("epochs must be an integer")) }
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "- a\n- b")) { XCTAssertTrue("\($0)".contains("mapping")) }
        // Found by fuzzing: a mapping key that is a sequence made Yams trap while building values.
        for text in ["?\r-", "? [a]\n: 1", "epochs: {a: 1}", "? - x\n  - y\n: z"] {
            XCTAssertThrowsError(try TrainConfig.parse(yaml: text), text)
        }
        var c2 = TrainConfig()
        XCTAssertThrowsError(try c2.apply(override: "hidden=? [a]")) { XCTAssertTrue("\($0)".contains("hidden"), "\($0)") }
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "epochs: 3\nlr: 0.1\nepochs: 5\n")) {
            XCTAssertEqual("\($0)", "config sets epochs twice (line 3); keep one")
        }
        var c = TrainConfig()
        XCTAssertThrowsError(try c.apply(override: "novalue")) { XCTAssertTrue("\($0)".contains("key=value")) }
        for (key, value, message) in [("sparsity", "1.0", "sparsity must be in [0, 1)"), ("batch_size", "127", "multiple of the 2 ranks"),
                                      ("density_method", "magic", "density_method must be"), ("dataset", "mnist", "dataset must be"),
                                      ("bn", "global", "bn must be local or sync"), ("lr", "-1", "lr must be positive"),
                                      ("hidden", "[-5]", "hidden widths of the MLP must be at least 1"),
                                      ("hidden", "[0]", "hidden widths of the MLP must be at least 1"),
                                      ("width", "0", "width must be at least 1"),
                                      ("synflow_shortcuts", "keep", "synflow_shortcuts must be dense or prune"),
                                      ("convolution", "fft", "convolution must be one of automatic, gemm, direct, winograd, winograd4")] {
            var bad = TrainConfig()
            XCTAssertNoThrow(try bad.apply(override: "\(key)=\(value)"))
            XCTAssertThrowsError(try bad.validate(worldSize: 2)) { XCTAssertTrue("\($0)".contains(message), "\(key): \($0)") }
        }
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "sparsity: .nan").validate(worldSize: 1))
    }
}

final class PresetTests: XCTestCase {
    func testEveryShippedPresetIsAValidConfig() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("launch/presets").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertTrue(files.contains("quickstart.yaml"))
        for f in files {
            let text = try String(contentsOfFile: dir + "/" + f, encoding: .utf8)
            XCTAssertNoThrow(try TrainConfig.parse(yaml: text).validate(worldSize: 2), f)
        }
    }
}

final class ConfigErrorTests: XCTestCase {
    func testInvalidYAMLIsReportedOnOneLine() {
        XCTAssertThrowsError(try TrainConfig.parse(yaml: "model: [1,2\n")) {
            XCTAssertTrue("\($0)".hasPrefix("config is not valid YAML"))
            XCTAssertFalse("\($0)".contains("\n"), "\($0)")
        }
    }
}
