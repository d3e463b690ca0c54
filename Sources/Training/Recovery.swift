import Comm
import Logging
import Foundation

/// Training stopped because the loss or the weights stopped being finite. Raised on every rank
/// at the same step; the last checkpoint on disk is the last good one.
public struct TrainingDiverged: RaisedOnEveryRank, CustomStringConvertible {
    public let description: String
}

extension Trainer {
    /// Agrees across ranks whether this step's loss is finite (throws `TrainingDiverged` if not)
    /// and whether any rank was asked to stop (returned). One 3-value allreduce per step: a rank's
    /// local loss can be NaN, or a signal reach one rank, while the others see nothing.
    func checkStep(_ loss: Float, epoch: Int, step: Int, learningRate: Float) throws -> Bool {
        var bad: [Double] = [loss.isNaN ? 1 : 0, loss.isInfinite ? 1 : 0, (stopRequested?() ?? false) ? 1 : 0]
        try comm.allreduce(&bad, op: .max)
        guard bad[0] == 0 && bad[1] == 0 else {
            let what = bad[0] != 0 ? "NaN" : "infinite"
            throw TrainingDiverged(description: "the loss became \(what) at epoch \(epoch + 1) step \(step + 1) (lr \(learningRate)); \(lastGoodCheckpoint) — lower lr, add warmup_epochs or check the data")
        }
        return bad[2] != 0
    }

    /// Throws `TrainingDiverged` if any weight, momentum or BN statistic is not finite (identical
    /// on every rank, so every rank decides alike). Called before a checkpoint is written, so
    /// a good checkpoint is never replaced by a diverged one.
    func checkStateIsFinite(epoch: Int) throws {
        let store = network.store
        let finite = store.values.allSatisfy(\.isFinite) && store.momentumIsFinite
            && network.batchNorms.allSatisfy { $0.runningMean.allSatisfy(\.isFinite) && $0.runningVar.allSatisfy(\.isFinite) }
        guard finite else {
            throw TrainingDiverged(description: "the weights became non-finite during epoch \(epoch + 1); \(lastGoodCheckpoint)")
        }
    }

    /// What the run directory still holds, for a divergence message.
    var lastGoodCheckpoint: String {
        let path = runDirectory + "/" + Self.checkpointName
        guard let ck = try? Checkpoint.read(from: path), let epoch = ck.metadata["epoch"] else {
            return "no checkpoint was written before it"
        }
        return "the last good checkpoint (epoch \(epoch)) is kept at \(path)"
    }
}

extension Checkpoint {
    /// Refuses tensors with non-finite values and masks with values other than 0 and 1.
    func validateValues(path: String) throws {
        let nonFinite = tensors.reduce(0) { n, t in n + t.values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) } }
        guard nonFinite == 0 else {
            throw ConfigError("\(path): holds \(nonFinite) non-finite values (NaN or ±Inf): the run that wrote it diverged")
        }
        for t in tensors where t.name.hasPrefix("mask/") {
            guard t.values.allSatisfy({ $0 == 0 || $0 == 1 }) else {
                throw ConfigError("\(path): \(t.name) holds values other than 0 and 1")
            }
        }
    }
}

extension Trainer {
    /// The checkpoint a resumed run continues from: the last one, or — when it is missing or
    /// damaged (a crash between renames, a bad disk block) — the one before it, with a warning
    /// from rank 0 (given `logger`), which also renames the damaged file. Nil when the run has
    /// none yet; an error when every one present is unreadable.
    static func latestCheckpoint(in directory: String, logger: Logger?) throws -> (String, Checkpoint)? {
        let fm = FileManager.default
        let last = directory + "/" + checkpointName, previous = directory + "/" + previousCheckpointName
        var failure: Error? = nil
        if fm.fileExists(atPath: last) {
            do { return (last, try Checkpoint.read(from: last)) } catch { failure = error }
        }
        if fm.fileExists(atPath: previous) {
            let ck = try Checkpoint.read(from: previous)
            if let logger {
                logger.warning("\(failure.map { "\($0)" } ?? "\(last) is missing"); resuming from the previous checkpoint \(previous) (epoch \(ck.metadata["epoch"] ?? "?"))")
                // Rank 0 (the one given a logger) sets the damaged file aside, so the next
                // checkpoint does not push the good one out.
                if failure != nil { _ = rename(last, directory + "/checkpoint.damaged.safetensors") }
            }
            return (previous, ck)
        }
        if let failure { throw failure }
        return nil
    }
}
