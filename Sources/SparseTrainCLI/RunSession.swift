import Comm
import CSignals
import Datasets
import Foundation
import Logging
import Training

/// One training run in its run directory, across the ranks: refuses a directory that holds
/// another run, writes the config, sets an overwritten run aside until the new one has a
/// checkpoint, stops cleanly on SIGTERM / SIGINT / SIGUSR1, and prints the epochs' summary.
/// `sparsetrain train` runs one; `sparsetrain grid` runs one per point of an experiment grid.
struct RunSession {
    /// Continue the run in the config's output directory from its last checkpoint.
    var resume: Bool
    /// Replace a run already in the output directory.
    var overwrite = false
    /// Stop after this many more epochs (with a checkpoint).
    var stopAfterEpochs: Int?

    /// Files that make a directory a run.
    static let runFiles = ["config.yaml", "metrics.jsonl", Trainer.checkpointName, Trainer.previousCheckpointName]
    /// Where `--overwrite` keeps the run it replaces until the new run's first checkpoint.
    static let replacedDirectory = ".replaced-run"

    /// Trains the run `makeConfig` describes (called on every rank; a failure on any rank is
    /// reported once). Returns the epochs this call trained.
    @discardableResult
    func train(_ comm: Communicator, _ makeConfig: () throws -> TrainConfig) throws -> [EpochMetrics] {
        var logger = Logger(label: "sparsetrain")
        logger.logLevel = comm.rank == 0 ? .info : .warning
        let trainer = try agreed(comm) { () throws -> Trainer in
            let cfg = try makeConfig()
            try checkRunDirectory(cfg.output)
            return try Trainer(config: cfg, communicator: comm, resume: resume, logger: logger)
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
        do { return try trainAndReport(trainer, comm) } catch {
            if comm.rank == 0 { restoreReplacedRun(in: trainer.config.output) }
            throw error
        }
    }

    func trainAndReport(_ trainer: Trainer, _ comm: Communicator) throws -> [EpochMetrics] {
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
        guard comm.rank == 0 else { return history }
        if terminal { print("") }
        for m in history {
            print(String(format: "epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.0f img/s, %.1f s, %.1f MB allreduced",
                         m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.images_per_second, m.seconds,
                         Double(m.bytes_allreduced) / 1e6))
        }
        if let stop, stop < trainer.config.totalEpochs, trainer.completedEpochs == stop {
            print("stopped after epoch \(stop) of \(trainer.config.totalEpochs); continue with: sparsetrain train --resume \(trainer.runDirectory)")
        }
        if let last = history.last {
            print(String(format: "done: %@ at density %.4f, test accuracy %.4f (top-5 %.4f) after %d epochs in %.0f s; checkpoint %@/%@",
                         trainer.config.model, last.effective_density, last.test_acc, last.test_top5,
                         trainer.completedEpochs, Date().timeIntervalSince(t0), trainer.runDirectory, Trainer.checkpointName))
        } else {
            print("nothing to do: the run in \(trainer.runDirectory) already completed \(trainer.completedEpochs) epochs")
        }
        return history
    }

    /// Refuses a directory that already holds a run unless resuming or overwriting.
    func checkRunDirectory(_ dir: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: dir + "/" + Self.replacedDirectory) {
            throw ConfigError("\(dir)/\(Self.replacedDirectory) holds a run that an interrupted --overwrite replaced: restore it (mv \(dir)/\(Self.replacedDirectory)/* \(dir)/) or delete it")
        }
        guard !resume else { return }
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
        if resume { try truncateMetrics(cfg.output + "/metrics.jsonl", afterEpoch: completedEpochs) }
        if !resume {
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

/// What a run directory holds, compared with the run a grid wants there.
enum RunState: Equatable {
    /// Nothing yet.
    case new
    /// The same run, stopped after this many epochs (0: before its first checkpoint).
    case partial(epochs: Int)
    case complete(epochs: Int)
    /// Something else: another run (the differing keys), or a run set aside by `--overwrite`.
    case conflict(String)

    /// Keys that may differ between the grid's config and the saved one (as when resuming).
    static let changeable = TrainConfig.operationalKeys.union(["output"])

    init(directory dir: String, wanted: TrainConfig) {
        let fm = FileManager.default
        if fm.fileExists(atPath: dir + "/" + RunSession.replacedDirectory) {
            self = .conflict("holds a run set aside by an interrupted --overwrite (\(RunSession.replacedDirectory))")
            return
        }
        guard RunSession.runFiles.contains(where: { fm.fileExists(atPath: dir + "/" + $0) }) else { self = .new; return }
        guard let text = try? String(contentsOfFile: dir + "/config.yaml", encoding: .utf8),
              let saved = try? TrainConfig.parse(yaml: text) else {
            self = .conflict("holds run files but no readable config.yaml")
            return
        }
        let lines = { (c: TrainConfig) in Set(c.yaml().split(separator: "\n").filter { !Self.changeable.contains(String($0.prefix { $0 != ":" })) }) }
        let differing = lines(saved).symmetricDifference(lines(wanted)).map { String($0.prefix { $0 != ":" }) }
        guard differing.isEmpty else {
            self = .conflict("holds a different run (\(Set(differing).sorted().joined(separator: ", ")) differ)")
            return
        }
        let epoch = Checkpoint.readMetadata(from: dir + "/" + Trainer.checkpointName).flatMap { Int($0["epoch"] ?? "") } ?? 0
        self = epoch >= wanted.totalEpochs ? .complete(epochs: epoch) : .partial(epochs: epoch)
    }
}
