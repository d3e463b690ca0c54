import ArgumentParser
import Comm
import CSignals
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
            withWorld { comm in
                var logger = Logger(label: "sparsetrain")
                logger.logLevel = comm.rank == 0 ? .info : .warning
                let trainer = try agreed(comm) { () throws -> Trainer in
                    let cfg = try resolveConfig()
                    try checkRunDirectory(cfg.output)
                    return try Trainer(config: cfg, communicator: comm, resume: resume != nil, logger: logger)
                }
                // Only rank 0 writes; the others wait until the directory is ready.
                try agreed(comm) {
                    if comm.rank == 0 { try prepareRunDirectory(trainer.config, completedEpochs: trainer.completedEpochs) }
                }
                // An overwritten run is set aside until the new one has written its first
                // checkpoint, and put back if the new one fails before that.
                let replaced = trainer.config.output + "/" + Self.replacedDirectory
                if comm.rank == 0 {
                    trainer.onCheckpointSaved = { try? FileManager.default.removeItem(atPath: replaced) }
                }
                // SIGTERM, SIGINT, SIGUSR1: stop at a step every rank agrees on, with a checkpoint.
                stsig_install()
                trainer.stopRequested = { stsig_received() != 0 }
                do { try trainAndReport(trainer, comm) } catch {
                    if comm.rank == 0 { restoreReplacedRun(in: trainer.config.output) }
                    throw error
                }
            }
        }

        func trainAndReport(_ trainer: Trainer, _ comm: Communicator) throws {
            try trainer.prepare()
            // Under an MPI launcher stdout is often a pseudo-terminal of mpirun's, whatever
            // mpirun's own output is: print plain lines there.
            let terminal = isatty(1) == 1 && !MPICommunicator.isLaunchedByMPI
            let t0 = Date()
            if let n = stopAfterEpochs, n < 1 { throw ConfigError("--stop-after-epochs must be at least 1") }
            let stop = stopAfterEpochs.map { trainer.completedEpochs + $0 }
            let history = try trainer.run(stopAfter: stop) { line in
                if terminal {
                    print("\r" + line + "   ", terminator: "")
                } else {
                    print(line)
                }
                fflushStdout()
            }
            guard comm.rank == 0 else { return }
            if terminal { print("") }
            for m in history {
                print(String(format: "epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.0f img/s, %.1f s, %.1f MB allreduced",
                             m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.images_per_second, m.seconds,
                             Double(m.bytes_allreduced) / 1e6))
            }
            if let stop, stop < trainer.config.totalEpochs, trainer.completedEpochs == stop {
                print("stopped after epoch \(stop) of \(trainer.config.totalEpochs); continue with: sparsetrain train --resume \(trainer.runDirectory)")
            }
            if let last = history.last ?? nil {
                print(String(format: "done: %@ at density %.4f, test accuracy %.4f (top-5 %.4f) after %d epochs in %.0f s; checkpoint %@/%@",
                             trainer.config.model, last.effective_density, last.test_acc, last.test_top5,
                             trainer.completedEpochs, Date().timeIntervalSince(t0), trainer.runDirectory, Trainer.checkpointName))
            } else {
                print("nothing to do: the run in \(trainer.runDirectory) already completed \(trainer.completedEpochs) epochs")
            }
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
                let changeable: Set<String> = ["epochs", "log_every", "checkpoint_every", "threads", "data_threads", "watchdog_seconds"]
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

        /// Files that make a directory a run.
        static let runFiles = ["config.yaml", "metrics.jsonl", Trainer.checkpointName, Trainer.previousCheckpointName]
        /// Where `--overwrite` keeps the run it replaces until the new run's first checkpoint.
        static let replacedDirectory = ".replaced-run"

        /// Refuses a directory that already holds a run unless resuming or overwriting.
        func checkRunDirectory(_ dir: String) throws {
            let fm = FileManager.default
            if fm.fileExists(atPath: dir + "/" + Self.replacedDirectory) {
                throw ConfigError("\(dir)/\(Self.replacedDirectory) holds a run that an interrupted --overwrite replaced: restore it (mv \(dir)/\(Self.replacedDirectory)/* \(dir)/) or delete it")
            }
            guard resume == nil else { return }
            if Self.runFiles.contains(where: { fm.fileExists(atPath: dir + "/" + $0) }) && !overwrite {
                if !fm.fileExists(atPath: dir + "/" + Trainer.checkpointName) {
                    throw ConfigError("\(dir) holds a run that stopped before its first checkpoint (use --resume \(dir) to start it again from the beginning, or --overwrite to replace it)")
                }
                throw ConfigError("\(dir) already holds a run (use --resume \(dir) to continue it or --overwrite to replace it)")
            }
        }

        /// Creates the run directory and writes the config; with `--overwrite`, first moves the
        /// old run's files into `replacedDirectory`. A resumed run drops the metrics of epochs
        /// after its checkpoint (they are trained again) and temporary files of a killed write.
        func prepareRunDirectory(_ cfg: TrainConfig, completedEpochs: Int) throws {
            let fm = FileManager.default
            do { try Datasets.createDirectory(cfg.output) } catch let e as DatasetError { throw ConfigError(e.description) }
            for f in (try? fm.contentsOfDirectory(atPath: cfg.output)) ?? [] where f.hasPrefix("." + Trainer.checkpointName + ".tmp-") {
                try? fm.removeItem(atPath: cfg.output + "/" + f)
            }
            if resume != nil { try truncateMetrics(cfg.output + "/metrics.jsonl", afterEpoch: completedEpochs) }
            if resume == nil {
                let old = Self.runFiles.filter { fm.fileExists(atPath: cfg.output + "/" + $0) }
                if !old.isEmpty {
                    let aside = cfg.output + "/" + Self.replacedDirectory
                    try fm.createDirectory(atPath: aside, withIntermediateDirectories: true)
                    for f in old { try fm.moveItem(atPath: cfg.output + "/" + f, toPath: aside + "/" + f) }
                }
            }
            try Data(cfg.yaml().utf8).write(to: URL(fileURLWithPath: cfg.output + "/config.yaml"), options: .atomic)
        }

        /// Keeps the lines of `path` whose `epoch` is at most `epoch` (atomic rewrite).
        func truncateMetrics(_ path: String, afterEpoch epoch: Int) throws {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            let kept = lines.filter { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let e = object["epoch"] as? Int else { return true }
                return e <= epoch
            }
            guard kept.count < lines.count else { return }
            try Data(kept.map { $0 + "\n" }.joined().utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        }

        /// Puts back the run an `--overwrite` set aside, if the new run wrote no checkpoint.
        func restoreReplacedRun(in dir: String) {
            let fm = FileManager.default
            let aside = dir + "/" + Self.replacedDirectory
            guard fm.fileExists(atPath: aside) else { return }
            for f in Self.runFiles {
                try? fm.removeItem(atPath: dir + "/" + f)
                if fm.fileExists(atPath: aside + "/" + f) { try? fm.moveItem(atPath: aside + "/" + f, toPath: dir + "/" + f) }
            }
            try? fm.removeItem(atPath: aside)
            printError("the run \(dir) held before --overwrite is restored")
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
