import ArgumentParser
import Comm
import Foundation
import Reporting
import Training

extension SparseTrain {
    /// `sparsetrain grid`: every run of an experiment grid, in turn, on the ranks it is given.
    struct Grid: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run an experiment grid (launch/experiments/*.yaml) across the ranks: complete runs are skipped, interrupted ones resumed, a different run in a run's directory is never replaced.",
            discussion: """
                Each grid file lists the runs of one of the paper's tables at the paper's budget;
                --budget scales the keys the file names under `scale` (epochs, and the mask
                update interval for rewiring) and keeps the schedule's fractions. Run it again
                after a stop (time limit, SIGTERM, a crash): it continues where it stopped. When
                every run is complete it writes the report (table beside the paper's numbers,
                figures, HTML page) into OUT/report-<grid name>.
                """)

        @Argument(help: "Grid file (YAML).") var file: String
        @Option(help: "Fraction of the paper's schedule (default: the file's budget).") var budget: Double?
        @Option(help: "Directory of the grid's runs (default: runs/<grid name>).") var out: String?
        @Option(name: .customLong("set"), help: ArgumentHelp("Override a setting of every run, e.g. --set model=resnet20 (repeatable).", valueName: "key=value"))
        var overrides: [String] = []
        @Option(help: ArgumentHelp("Only the runs with one of these values, e.g. --only sparsity=0.9,0.99 (repeatable).", valueName: "key=v1,v2"))
        var only: [String] = []
        @Flag(help: "List the runs and what their directories hold; train nothing.") var list = false

        func run() throws {
            bootstrapLogging()
            withWorld { comm in
                let (grid, runs) = try agreed(comm) { () throws -> (ExperimentGrid, [ExperimentGrid.Run]) in
                    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ConfigError("\(file): cannot read grid file") }
                    let name = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
                    let grid = try ExperimentGrid(yaml: text, name: name)
                    let runs = try grid.runs(budget: budget, overrides: overrides, only: only, root: out ?? "runs/\(name)")
                    for run in runs { try run.config.validate(worldSize: comm.size) }
                    return (grid, runs)
                }
                let root = out ?? "runs/\(grid.name)"
                if list {
                    // Rank 0 reads the directories and prints; nothing is trained.
                    if comm.rank == 0 {
                        printRuns(grid, runs, runs.map { RunState(directory: $0.config.output, wanted: $0.config) }, root: root)
                    }
                    return
                }
                let states = try agreedStates(runs, comm)
                if comm.rank == 0 { printRuns(grid, runs, states, root: root) }
                for (k, (run, state)) in zip(runs, states).enumerated() {
                    if case .complete = state { continue }
                    if comm.rank == 0 { print("grid \(grid.name): run \(k + 1) of \(runs.count), \(run.name) (\(Self.describe(state, of: run.config)))") }
                    fflushStdout()
                    let resume = state != .new
                    try RunSession(resume: resume).train(comm) { run.config }
                }
                if comm.rank == 0 {
                    print("grid \(grid.name): all \(runs.count) runs complete")
                    let records = try runs.map { run in
                        do { return try RunRecord(directory: run.config.output) } catch let e as ConfigError { throw InputError(e.description) }
                    }
                    try writeReport(records, paper: grid.paper.flatMap(PaperTable.named), title: grid.title, out: root + "/report-" + grid.name)
                }
            }
        }

        /// Rank 0's reading of every run directory, the same on every rank; a directory holding
        /// something else is an error naming it.
        func agreedStates(_ runs: [ExperimentGrid.Run], _ comm: Communicator) throws -> [RunState] {
            let local = comm.rank == 0 ? runs.map { RunState(directory: $0.config.output, wanted: $0.config) } : []
            try agreed(comm) {
                for (run, state) in zip(runs, local) {
                    if case .conflict(let why) = state {
                        throw ConfigError("\(run.config.output) \(why): the grid never replaces a run; move it away or give --out another directory")
                    }
                }
            }
            var codes: [Int32] = local.flatMap { state -> [Int32] in
                switch state {
                case .new: return [0, 0]
                case .partial(let e): return [1, Int32(e)]
                case .complete(let e): return [2, Int32(e)]
                case .conflict: return [3, 0]
                }
            }
            if comm.rank != 0 { codes = Array(repeating: 0, count: 2 * runs.count) }
            try comm.broadcast(&codes, root: 0)
            return (0..<runs.count).map { k in
                switch codes[2 * k] {
                case 0: return .new
                case 1: return .partial(epochs: Int(codes[2 * k + 1]))
                default: return .complete(epochs: Int(codes[2 * k + 1]))
                }
            }
        }

        /// The grid's header and one line per run with what its directory holds.
        func printRuns(_ grid: ExperimentGrid, _ runs: [ExperimentGrid.Run], _ states: [RunState], root: String) {
            print("grid \(grid.name): \(grid.title); budget \(String(format: "%g", budget ?? grid.budget)), \(runs.count) runs in \(root)")
            for (k, (run, state)) in zip(runs, states).enumerated() {
                print("  \(k + 1). \(run.name): \(Self.describe(state, of: run.config))")
            }
        }

        static func describe(_ state: RunState, of config: TrainConfig) -> String {
            switch state {
            case .new: return "to run, \(config.totalEpochs) epochs"
            case .partial(let e): return "to resume after epoch \(e) of \(config.totalEpochs)"
            case .complete(let e): return "complete (\(e) epochs), skipped"
            case .conflict(let why): return why
            }
        }
    }
}
