import ArgumentParser
import Foundation

@main
struct SparseTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparsetrain",
        abstract: "Sparse-to-sparse neural network training across MPI ranks on CPUs.",
        discussion: """
            Run under mpirun (or launch/run-local.sh) for several ranks; without a launcher it \
            runs as a single process.
            """,
        subcommands: [Train.self, Eval.self, Compare.self, Densities.self, TheoryCommand.self, PrepareData.self, Bench.self, Info.self, Report.self, Grid.self])

    /// Parses and runs; under an MPI launcher only rank 0 prints a command-line error, so the
    /// ranks' copies do not interleave.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if (launcherRank ?? 0) != 0 { Foundation.exit(exitCode(for: error).rawValue) }
            exit(withError: error)
        }
    }

    /// This process's rank as the launcher's environment gives it (OpenMPI, PMI, Slurm), before
    /// MPI is initialised; nil outside a launcher.
    static var launcherRank: Int? {
        let env = ProcessInfo.processInfo.environment
        for key in ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"] {
            if let value = env[key], let rank = Int(value) { return rank }
        }
        return nil
    }
}
