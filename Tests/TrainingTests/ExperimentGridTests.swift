import Foundation
import XCTest
@testable import Training

final class ExperimentGridTests: XCTestCase {
    let text = """
        title: a grid
        paper: table2
        budget: 0.5
        scale: [epochs, rigl_update_every]
        base: {model: resnet20, epochs: 160, lr: 0.1, milestones: [0.5, 0.75]}
        axes:
          - algorithm:
              - {name: fixed, algorithm: fixed}
              - {name: rigl, algorithm: rigl, rigl_update_every: 100}
            sparsity: [0.9, 0.99]
            seed: [0, 1]
          - algorithm: [imp]
            schedule:
              - {sparsity: 0, final_sparsity: 0.9, imp_cycle_epochs: 3}
            seed: [0]
        """

    func testAxesMakeNamedRunsWithTheSeedVaryingSlowest() throws {
        let grid = try ExperimentGrid(yaml: text, name: "g")
        XCTAssertEqual(grid.title, "a grid")
        XCTAssertEqual(grid.paper, "table2")
        let runs = try grid.runs(root: "out")
        XCTAssertEqual(runs.map(\.name), ["fixed_0.9_seed0", "fixed_0.99_seed0", "rigl_0.9_seed0", "rigl_0.99_seed0", "imp_0-0.9-3_seed0",
                                          "fixed_0.9_seed1", "fixed_0.99_seed1", "rigl_0.9_seed1", "rigl_0.99_seed1"])
        let rigl = runs[3].config
        XCTAssertEqual(rigl.algorithm, "rigl")
        XCTAssertEqual(rigl.sparsity, 0.99)
        XCTAssertEqual(rigl.output, "out/rigl_0.99_seed0")
        XCTAssertEqual(rigl.milestones, [0.5, 0.75], "fractions are not scaled")
        // Budget 0.5 of the file: 160 → 80 epochs, 100 → 50 steps between updates.
        XCTAssertEqual(rigl.epochs, 80)
        XCTAssertEqual(rigl.riglUpdateEvery, 50)
        XCTAssertEqual(runs[4].config.impCycleEpochs, 3, "a key the grid does not scale")
        XCTAssertEqual(runs[4].config.finalSparsity, 0.9)
        XCTAssertEqual(runs[5].config.seed, 1)
    }

    func testBudgetOverridesAndFilters() throws {
        let grid = try ExperimentGrid(yaml: text, name: "g")
        // 160 · 0.025 = 4 epochs; 100 · 0.025 = 2.5 → 3 steps; never below 1.
        let short = try grid.runs(budget: 0.025, root: "r")
        XCTAssertEqual(short[2].config.epochs, 4)
        XCTAssertEqual(short[2].config.riglUpdateEvery, 3)
        XCTAssertEqual(try grid.runs(budget: 0.0001, root: "r")[2].config.riglUpdateEvery, 1)
        let some = try grid.runs(overrides: ["lr=0.05", "rigl_update_every=30"], only: ["sparsity=0.99", "seed=0"], root: "r")
        XCTAssertEqual(some.map(\.name), ["fixed_0.99_seed0", "rigl_0.99_seed0"])
        XCTAssertTrue(some.allSatisfy { $0.config.lr == 0.05 })
        // A key of one algorithm changes that algorithm's runs only.
        XCTAssertEqual(some.map(\.config.riglUpdateEvery), [nil, 30])
        XCTAssertNoThrow(try some[0].config.validate(worldSize: 1))
        XCTAssertThrowsError(try grid.runs(overrides: ["popup_levels=3"], root: "r")) {
            XCTAssertTrue("\($0)".contains("belongs to an algorithm none of its runs uses"), "\($0)")
        }
        XCTAssertThrowsError(try grid.runs(only: ["sparsity=0.5"], root: "r")) { XCTAssertTrue("\($0)".contains("no run matches"), "\($0)") }
        XCTAssertThrowsError(try grid.runs(budget: 0, root: "r"))
    }

    func testBadGridsAreOneLineErrors() {
        func error(_ yaml: String) -> String {
            do { _ = try ExperimentGrid(yaml: yaml, name: "bad").runs(root: "r"); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(error("axes: {sparsity: [0.9, 0.9]}").contains("two runs are named 0.9"))
        XCTAssertTrue(error("scale: [epoch]").contains("'epoch', which is not a config key"))
        XCTAssertTrue(error("colour: blue").contains("unknown key 'colour'"))
        XCTAssertTrue(error("axes: {sparsity: []}").contains("non-empty list"))
        XCTAssertTrue(error("base: {epochs: many}\naxes: {seed: [0]}").contains("grid bad, run seed0"))
        XCTAssertTrue(error("base: {sparsity: 0.9}\nscale: [density_method]\naxes: {density_method: [erk]}").contains("must be a number"))
        XCTAssertTrue(error("axes: [").contains("not valid YAML"))
    }

    /// Every grid the repository ships expands to runs whose configs are valid for 2 ranks.
    func testTheShippedGridsAreValid() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("launch/experiments").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertEqual(files, ["fig3-flow.yaml", "table1.yaml", "table2.yaml", "table28.yaml", "table29.yaml", "table3.yaml", "table4.yaml", "table5.yaml"])
        for file in files {
            let grid = try ExperimentGrid(yaml: try String(contentsOfFile: dir + "/" + file, encoding: .utf8), name: String(file.dropLast(5)))
            for run in try grid.runs(budget: 0.025, root: "r") {
                XCTAssertNoThrow(try run.config.validate(worldSize: 2), "\(file): \(run.name)")
            }
        }
    }
}
