import ArgumentParser
import Comm
import Datasets
import Foundation
import Logging
import Training

extension SparseTrain {
    /// `sparsetrain train`: a sparse-to-sparse run across the MPI ranks.
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train from a random ER mask, sparse to sparse (run under mpirun or launch/run-local.sh for several ranks).",
            discussion: """
                Settings come from --config (YAML) and --set key=value; unknown keys are
                errors that list the valid ones. Presets: launch/presets/*.yaml.

                algorithm: how the mask changes. Rank 0 decides each change and
                broadcasts it (1 bit per weight); every rank applies it.
                  fixed   the initial mask for the whole run.
                  imp     iterative magnitude pruning from the initial mask (ER, or
                          dense with sparsity 0) to final_sparsity. Each cycle of
                          imp_cycle_epochs (10) ends with a global magnitude prune
                          of imp_prune_fraction (0.2) of the remaining weights (the
                          last lands exactly on final_sparsity), a rewind of weights
                          and BN affine parameters to imp_rewind_epoch (0), cleared
                          momentum and a restarted LR schedule (cosine to lr/10
                          unless min_lr is set); then imp_final_epochs of retraining.
                          The run's length follows: do not set epochs.
                  rigl    every rigl_update_every (100) steps each layer drops
                          ceil(a_t * nnz) weights of smallest |w| and grows as many
                          of largest |dense gradient| (new weights start at +0);
                          a_t = rigl_alpha (0.5) / 2 * (1 + cos(pi t / T_end)),
                          T_end = rigl_end (0.75) of training. With final_sparsity
                          above sparsity: prune-and-rewire, a global magnitude prune
                          on the cubic schedule before each rewiring, reaching
                          final_sparsity exactly at prune_end (0.6875) of training.
                  str     STR inside the ER mask: one learned threshold s per layer,
                          effective weight mask * sign(w) * relu(|w| - sigmoid(s));
                          weight decay (also on s) raises the threshold. s starts at
                          str_s_init, by default the value that switches the
                          threshold on at the same fraction of training as the
                          paper's 100-epoch runs (s = -200 there). At every epoch's
                          end the weights under their threshold leave the mask.
                  edge-popup
                          strong lottery tickets inside the ER mask: weights frozen
                          (Kaiming normal), BN without affine parameters, biases 0;
                          one trained score per active weight; each layer computes
                          with exactly its k largest |scores| (straight-through
                          gradient). k goes geometrically from the ER density to
                          final_sparsity (layer ratios of density_method) over
                          popup_levels (5) levels of popup_level_epochs (10), the LR
                          schedule restarting each level. Do not set epochs.
                """)

        @Option(help: "YAML config file.")
        var config: String?

        @Option(name: .customLong("set"), help: ArgumentHelp("Override a setting, e.g. --set epochs=5 (repeatable).", valueName: "key=value"))
        var overrides: [String] = []

        @Option(help: "Run directory (overrides the config's output).")
        var output: String?

        @Option(help: "Continue the run in this directory from its last checkpoint.")
        var resume: String?

        @Flag(help: "Replace a run already in the output directory.")
        var overwrite = false

        @Option(help: "Stop after this many more epochs (a checkpoint is written), e.g. to fit a job's time limit; continue with --resume.")
        var stopAfterEpochs: Int?

        func run() throws {
            bootstrapLogging()
            let session = RunSession(resume: resume != nil, overwrite: overwrite, stopAfterEpochs: stopAfterEpochs)
            withWorld { comm in _ = try session.train(comm) { try resolveConfig() } }
        }

        /// The config from the file, overrides and flags; for a resumed run, the saved config.
        func resolveConfig() throws -> TrainConfig {
            if let dir = resume {
                if let output, output != dir {
                    throw ConfigError("--output \(output) cannot go with --resume \(dir): a resumed run continues in its own directory")
                }
                let path = dir + "/config.yaml"
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ConfigError("\(path): missing; --resume needs a run directory")
                }
                var cfg = try TrainConfig.parse(yaml: text)
                let changeable = TrainConfig.operationalKeys.union(["epochs"])
                for o in overrides {
                    let key = String(o.prefix { $0 != "=" })
                    guard changeable.contains(key) else {
                        throw ConfigError("cannot change \(key) when resuming (changeable: \(changeable.sorted().joined(separator: ", ")))")
                    }
                    try cfg.apply(override: o)
                }
                cfg.output = dir
                return cfg
            }
            var cfg = TrainConfig()
            if let file = config {
                guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ConfigError("\(file): cannot read config") }
                cfg = try TrainConfig.parse(yaml: text)
            }
            for o in overrides { try cfg.apply(override: o) }
            if let output { cfg.output = output }
            return cfg
        }
    }

    /// `sparsetrain eval`: test accuracy of a saved model.
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Test loss and accuracy of a checkpoint.")

        @Option(help: "Checkpoint file (checkpoint.safetensors of a run directory).")
        var checkpoint: String

        @Option(help: "Data directory (default: the one the run used).")
        var dataPath: String?

        func run() throws {
            bootstrapLogging()
            withWorld { comm in
                let trainer = try agreed(comm) { () throws -> Trainer in
                    let ck = try Checkpoint.read(from: checkpoint)
                    guard let yaml = ck.metadata["config"] else { throw ConfigError("\(checkpoint): checkpoint has no config") }
                    var cfg = try TrainConfig.parse(yaml: yaml)
                    if let dataPath { cfg.dataPath = dataPath }
                    let t = try Trainer(config: cfg, communicator: comm, logger: Logger(label: "sparsetrain"))
                    try t.load(ck, path: checkpoint)
                    return t
                }
                let r = try trainer.evaluate()
                if comm.rank == 0 {
                    print(String(format: "%@: test loss %.6f, accuracy %.4f, top-5 %.4f", checkpoint, r.loss, r.top1, r.top5))
                }
            }
        }
    }

    /// `sparsetrain compare`: largest differences between two checkpoints.
    struct Compare: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two checkpoints tensor by tensor; exit 1 if any differs by more than --tolerance.")

        @Argument(help: "First checkpoint.") var first: String
        @Argument(help: "Second checkpoint.") var second: String
        @Option(help: "Largest allowed absolute difference.") var tolerance: Double = 0

        func validate() throws {
            guard tolerance.isFinite, tolerance >= 0 else {
                throw InputError("--tolerance must be a finite number ≥ 0, got \(tolerance)")
            }
        }

        func run() throws {
            let a: Checkpoint, b: Checkpoint
            do { a = try Checkpoint.read(from: first); b = try Checkpoint.read(from: second) } catch let e as ConfigError {
                throw InputError(e.description)
            }
            let c: CheckpointComparison
            do { c = try CheckpointComparison(a, b) } catch let e as ConfigError { throw InputError(e.description) }
            for (path, count) in [(first, c.nonFinite.first), (second, c.nonFinite.second)] where count > 0 {
                print("\(path) holds \(count) non-finite values (NaN or ±Inf)")
            }
            for (g, d) in c.worst.sorted(by: { $0.key < $1.key }) { print("\(g): max |Δ| = \(d)") }
            let overall = c.overall
            print("overall max |Δ| = \(overall) (tolerance \(tolerance))")
            if overall > tolerance { throw ExitCode(1) }
        }
    }
}

/// Runs `body` on every rank and agrees on the outcome: if it failed on any rank, every rank
/// throws `AgreedFailure` (no collective is left waiting), and only the lowest failing rank
/// carries its error to report — identical config errors are printed once, not once per rank.
func agreed<T>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    let result = Result { try body() }
    let failed: Bool = { if case .failure = result { return true } else { return false } }()
    var first: [Int32] = [failed ? Int32(comm.rank) : Int32(comm.size)]
    try comm.allreduce(&first, op: .min, counts: .trusted)
    if Int(first[0]) < comm.size {
        var report: Error? = nil
        if Int(first[0]) == comm.rank, case .failure(let e) = result { report = e }
        throw AgreedFailure(report: report)
    }
    return try result.get()
}

/// A failure every rank has agreed on; `report` is set on the one rank that prints it.
struct AgreedFailure: Error {
    let report: Error?
}

private let loggingOnce: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
func bootstrapLogging() { _ = loggingOnce }
