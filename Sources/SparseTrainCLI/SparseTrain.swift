import ArgumentParser

@main
struct SparseTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparsetrain",
        abstract: "Sparse-to-sparse neural network training across MPI ranks on CPUs.",
        discussion: """
            Run under mpirun (or launch/run-local.sh) for several ranks; without a launcher it \
            runs as a single process.
            """,
        subcommands: [Train.self, Eval.self, Compare.self, Densities.self, TheoryCommand.self, PrepareData.self, Bench.self, Info.self])
}
