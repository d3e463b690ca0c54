import Foundation
import FoundationXML
import XCTest
@testable import Reporting
import Training

final class ReportTests: XCTestCase {
    private var root = ""
    override func setUp() { root = NSTemporaryDirectory() + "report-\(UUID().uuidString)" }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    /// A run directory with `config` (key=value overrides) and one metrics line per accuracy
    /// (10 steps per epoch, global density `densities[e]`, two layers `l1` at d/2 and `l2` at 3d/2), after
    /// one mask change at step 3.
    private func run(_ name: String, _ overrides: [String], accuracies: [Double], densities: [Double]? = nil) throws -> String {
        let dir = root + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var config = TrainConfig()
        for o in overrides { try config.apply(override: o) }
        try config.yaml().write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        var lines = "{\"event\":\"mask_change\",\"epoch\":1,\"step\":3,\"density\":\(densities?.first ?? 0.01),\"dropped\":4,\"grown\":2}\n"
        for (e, a) in accuracies.enumerated() {
            let d = densities?[e] ?? 0.01
            lines += "{\"epoch\":\(e + 1),\"test_acc\":\(a),\"train_loss\":1,\"test_loss\":1,\"seconds\":10,\"bytes_allreduced\":2000000,"
                + "\"bytes_broadcast\":500,\"mask_changes\":1,\"global_density\":\(d),\"effective_density\":\(d),\"steps\":\(10 * (e + 1)),"
                + "\"layers\":[\"l1\",\"l2\"],\"effective_layer_density\":{\"l2\":\(1.5 * d),\"l1\":\(0.5 * d)}}\n"
        }
        try lines.write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
        return dir
    }

    func testSeedsAreOneRowWithMeanIntervalAndThePaperColumn() throws {
        let vgg = ["model=vgg16", "density_method=balanced", "sparsity=0.99"]
        let dirs = [try run("a", vgg + ["seed=0"], accuracies: [0.3, 0.5]), try run("b", vgg + ["seed=1"], accuracies: [0.4, 0.6]),
                    try run("c", vgg + ["seed=2"], accuracies: [0.5, 0.7]),
                    try run("d", ["model=vgg16", "density_method=uniform", "sparsity=0.95"], accuracies: [0.8])]
        let groups = RunGroup.grouping(try dirs.map { try RunRecord(directory: $0) })
        XCTAssertEqual(groups.map(\.runs.count), [3, 1])
        XCTAssertEqual(groups[0].label, "vgg16 fixed balanced 0.99")
        // Final accuracies 0.5, 0.6, 0.7: mean 60.0, 95% half-width t(2) · s / √3 = 4.303 · 0.1 / √3.
        XCTAssertEqual(groups[0].finalAccuracy.mean, 0.6, accuracy: 1e-12)
        XCTAssertEqual(groups[0].finalAccuracy.halfWidth!, 4.303 * 0.1 / 3.0.squareRoot(), accuracy: 1e-9)
        XCTAssertNil(groups[1].finalAccuracy.halfWidth)
        let table = markdownTable(groups, paper: PaperTable.named("table1"))
        let rows = table.split(separator: "\n")
        XCTAssertEqual(rows.count, 4)
        XCTAssertEqual(rows[2], "| vgg16 fixed balanced 0.99 | 3 | 60.0 ± 24.8 | 89.3 | 60.0 ± 24.8 | 0.0100 | 2 | 20 | 4.0 | 1.0 | 2 |")
        XCTAssertTrue(rows[3].hasPrefix("| vgg16 fixed uniform 0.95 | 1 | 80.0 | — | 80.0 |"), String(rows[3]))
    }

    func testFiguresAndThePageAreWellFormedXML() throws {
        let dirs = [try run("a", ["model=resnet20", "sparsity=0.9"], accuracies: [0.4, 0.5], densities: [0.1, 0.1]),
                    try run("b", ["model=resnet20", "sparsity=0.99"], accuracies: [0.3, 0.35], densities: [0.01, 0.01]),
                    try run("c", ["model=resnet20", "algorithm=rigl", "sparsity=0.9", "final_sparsity=0.99"], accuracies: [0.2, 0.45],
                            densities: [0.04, 0.01])]
        let records = try dirs.map { try RunRecord(directory: $0) }
        XCTAssertEqual(records[2].finalLayerDensities.map(\.layer), ["l1", "l2"], "network order, not the map's")
        XCTAssertEqual(records[2].finalLayerDensities[0].density, 0.005, accuracy: 1e-12)
        XCTAssertEqual(records[2].finalLayerDensities[1].density, 0.015, accuracy: 1e-12)
        XCTAssertEqual(records[2].maskChanges.map(\.step), [3])
        let groups = RunGroup.grouping(records)
        let figures = reportFigures(groups)
        // Accuracy, curves, layer densities at 0.9 and at 0.99, density over training (only the
        // run whose density changes: 0.04 → 0.01), weights moved per mask change.
        XCTAssertEqual(figures.map(\.0), ["Accuracy against sparsity", "Training curves", "Per-layer density, resnet20 at sparsity 0.9",
                                          "Per-layer density, resnet20 at sparsity 0.99", "Density over training", "Mask changes"])
        for (_, svg) in figures {
            let parser = XMLParser(data: Data(svg.utf8))
            XCTAssertTrue(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        }
        XCTAssertTrue(figures[0].1.contains(">0.99<") && figures[0].1.contains(">0.9<"), "sparsity ticks")
        // Two groups at 0.99 (fixed and rigl), two layers each: four bars, l1 at half height.
        XCTAssertEqual(figures[3].1.components(separatedBy: "<rect x=").count - 1, 4 + 2, "bars and legend keys")
        XCTAssertEqual(figures[4].1.components(separatedBy: "<circle").count - 1, 3, "the change and two epoch ends")
        let page = reportPage(title: "t <&>", groups: groups, paper: nil, figures: figures)
        let parser = XMLParser(data: Data(page.utf8))
        XCTAssertTrue(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        XCTAssertEqual(page.components(separatedBy: "<svg ").count - 1, 6)
        XCTAssertTrue(page.contains("t &lt;&amp;&gt;"))
    }

    func testThePapersClaimsAreCheckedOnTheRunsAtHand() throws {
        let fixed99 = ["model=resnet20", "sparsity=0.99"]
        var dirs: [String] = []
        for (k, a) in [0.5, 0.6, 0.7].enumerated() { dirs.append(try run("bal\(k)", fixed99 + ["density_method=balanced", "seed=\(k)"], accuracies: [0.1, a])) }
        for (k, a) in [0.30, 0.31, 0.32].enumerated() { dirs.append(try run("uni\(k)", fixed99 + ["density_method=uniform", "seed=\(k)"], accuracies: [0.1, a])) }
        dirs.append(try run("pyr", fixed99 + ["density_method=pyramidal"], accuracies: [0.1, 0.2]))
        dirs.append(try run("rigl", fixed99 + ["density_method=balanced", "algorithm=rigl"], accuracies: [0.1, 0.65]))
        dirs.append(try run("imp-er", ["model=resnet20", "algorithm=imp", "sparsity=0.5", "final_sparsity=0.9"], accuracies: [0.5, 0.8]))
        dirs.append(try run("imp-dense", ["model=resnet20", "algorithm=imp", "sparsity=0", "final_sparsity=0.9"], accuracies: [0.5, 0.6, 0.805]))
        let checks = checkPaperClaims(RunGroup.grouping(try dirs.map { try RunRecord(directory: $0) }))
        XCTAssertEqual(checks.map(\.verdict), [.confirmed, .contradicted, .confirmed, .confirmed], "\(checks)")
        XCTAssertEqual(checks[0].claim, "resnet20: balanced ER ratios ≥ uniform at sparsity 0.99 (fixed mask)")
        // 60.0 ± 24.8 against 31.0 ± 2.5: the intervals do not overlap.
        XCTAssertEqual(checks[0].evidence, "resnet20 fixed balanced 0.99 60.0 ± 24.8 % against resnet20 fixed uniform 0.99 31.0 ± 2.5 %")
        XCTAssertTrue(checks[1].evidence.hasSuffix("(one seed: no interval)"), checks[1].evidence)
        XCTAssertEqual(checks[2].claim, "resnet20: RiGL rewiring at 0.99 beats the fixed balanced ER mask at 0.99")
        // IMP from ER: 80.0 against 80.5 (within a point), 2 epochs (20 s) against 3 (30 s).
        XCTAssertTrue(checks[3].evidence.contains("epochs 2 vs 3, wall time 20 vs 30 s (67%), 4 vs 6 MB allreduced (67%)"), checks[3].evidence)
        // Overlapping intervals cannot decide.
        let groups = RunGroup.grouping(try [dirs[0], dirs[1], dirs[2], dirs[3], dirs[4], dirs[5]].map { try RunRecord(directory: $0) })
        XCTAssertEqual(compare(claim: "c", groups[0], groups[0], atLeast: false).verdict, .inconclusive)
        let page = reportPage(title: "t", groups: groups, paper: nil, figures: [], claims: checks)
        let parser = XMLParser(data: Data(page.utf8))
        XCTAssertTrue(parser.parse())
        XCTAssertEqual(page.components(separatedBy: "<li>").count - 1, 4)
        XCTAssertTrue(claimsMarkdown(checks).contains("- **not confirmed**: resnet20: pyramidal ER ratios ≥ uniform at sparsity 0.99"))
    }

    func testARunIsCompleteOnceItHasTrainedAllItsEpochs() throws {
        XCTAssertTrue(try RunRecord(directory: try run("done", ["epochs=2"], accuracies: [0.1, 0.2])).isComplete)
        XCTAssertFalse(try RunRecord(directory: try run("half", ["epochs=4"], accuracies: [0.1, 0.2])).isComplete)
    }

    func testADirectoryWithoutARunIsAnError() {
        XCTAssertThrowsError(try RunRecord(directory: root + "/none")) { XCTAssertTrue("\($0)".contains("no config.yaml"), "\($0)") }
    }
}
