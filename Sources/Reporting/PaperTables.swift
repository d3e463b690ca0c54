/// The paper's numbers (test accuracy %, mean of 3 runs) for the tables our runs reproduce, as
/// ALGORITHMS.md §1 gives them. A cell is found from a run's algorithm, density method and
/// sparsities, whatever the run's model: the column's header names the paper's model (a smaller
/// model at a reduced budget is compared with it only as a reference). Table 5 (edge-popup) is
/// left out on purpose: the paper's code is not sparse there (ALGORITHMS.md §6.4), so its
/// numbers are not comparable.
public struct PaperTable: Sendable {
    public let name: String
    /// The paper's model for the table.
    public let model: String
    /// (algorithm, density method, start sparsity, final sparsity) → accuracy.
    let cells: [Key: Double]

    struct Key: Hashable, Sendable {
        let algorithm: String, method: String, start: Double, final: Double
    }

    /// The paper's number for `run`, if this table has its cell.
    public func value(for run: RunRecord) -> Double? {
        let method = run.config.sparsity == 0 ? "dense" : run.config.densityMethod
        return cells[Key(algorithm: run.config.algorithm, method: method, start: run.config.sparsity, final: run.targetSparsity)]
    }

    public static let all: [PaperTable] = [table1, table2, table4, table28]

    public static func named(_ name: String) -> PaperTable? { all.first { $0.name == name } }

    static let methods1 = ["pyramidal", "balanced", "uniform", "erk", "er-snip", "er-synflow", "er-imp"]
    static let table1 = PaperTable(name: "table1", model: "vgg16", cells: {
        let values: [[Double]] = [[92.9, 90.4, 87.8, 10], [93.2, 89.3, 85.9, 68.7], [91.3, 82.7, 73.7, 14.2],
                                  [92.7, 87.8, 84.5, 59.2], [93.2, 26.3, 10, 10], [91.4, 86.6, 84, 63.8], [90, 90.2, 79, 10]]
        var cells: [Key: Double] = [:]
        for (m, row) in zip(methods1, values) {
            for (s, v) in zip([0.9, 0.99, 0.995, 0.999], row) { cells[Key(algorithm: "fixed", method: m, start: s, final: s)] = v }
        }
        return cells
    }())
    static let table2 = PaperTable(name: "table2", model: "vgg16", cells: {
        var cells: [Key: Double] = [:]
        let rows: [(String, [Double], [Double])] = [("erk", [87.8, 84.5, 59.2], [90.8, 88.3, 74.1]),
                                                    ("balanced", [89.3, 85.9, 68.7], [91.4, 89.3, 78.9]),
                                                    ("pyramidal", [90.4, 87.8, 10], [92.0, 90.6, 9.8])]
        for (m, fixed, rewired) in rows {
            for (k, s) in [0.99, 0.995, 0.999].enumerated() {
                cells[Key(algorithm: "fixed", method: m, start: s, final: s)] = fixed[k]
                cells[Key(algorithm: "rigl", method: m, start: s, final: s)] = rewired[k]
            }
        }
        return cells
    }())
    static let table4 = PaperTable(name: "table4", model: "resnet18", cells: {
        var cells: [Key: Double] = [:]
        let rows: [(String, [Double])] = [("balanced", [93.54, 90.72, 93.14, 91.89]), ("pyramidal", [93.65, 92.23, 93.24, 92.23]),
                                          ("erk", [93.5, 90.95, 93.57, 93.21]), ("uniform", [93.18, 90.15, 92.62, 90.41])]
        for (m, values) in rows {
            for ((a, b), v) in zip([(0.7, 0.9), (0.7, 0.99), (0.8, 0.93), (0.9, 0.97)], values) {
                cells[Key(algorithm: "imp", method: m, start: a, final: b)] = v
            }
        }
        cells[Key(algorithm: "imp", method: "dense", start: 0, final: 0.9)] = 93.38
        cells[Key(algorithm: "imp", method: "dense", start: 0, final: 0.99)] = 91.39
        return cells
    }())
    static let table28 = PaperTable(name: "table28", model: "vgg16", cells: {
        var cells: [Key: Double] = [:]
        let rows: [(String, [Double])] = [("balanced", [93.08, 92.75, 92.70]), ("pyramidal", [93.13, 92.93, 92.58]),
                                          ("erk", [92.94, 92.77, 92.47])]
        for (m, values) in rows {
            for (a, v) in zip([0.5, 0.9, 0.95], values) { cells[Key(algorithm: "rigl", method: m, start: a, final: 0.99)] = v }
        }
        return cells
    }())
}
