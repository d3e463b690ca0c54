import Comm
import Foundation

/// Where an epoch stands after a stop in its middle: what the checkpoint of a stopped run holds
/// (metadata `epoch_progress`, JSON) so that `--resume` continues at the next step exactly.
struct EpochProgress: Codable {
    /// 0-based epoch and the steps of it already taken.
    var epoch: Int, steps: Int
    /// Loss and correct predictions summed over all ranks so far (a resumed run starts rank 0's
    /// sums from them, the others' from 0: the epoch's final allreduce adds them up).
    var lossSum: Double, correct: Double
    /// Bytes allreduced this epoch so far, all of them and those of dense-gradient allreduces.
    var packedBytes: Int, denseBytes: Int
    var seconds: Double
    /// The epoch's mask changes so far, and rank 0's lines not yet written to metrics.jsonl.
    var events: [MaskEvent]
    var pendingLines: [String]

    static let metadataKey = "epoch_progress"
}

/// A run that stopped on a signal, at a step every rank agreed on, after writing its checkpoint.
public struct StoppedBySignal: RaisedOnEveryRank, CustomStringConvertible {
    public let epoch: Int, step: Int, steps: Int
    public let directory: String
    public var description: String {
        let at = step == 0 ? "after epoch \(epoch)" : "at epoch \(epoch + 1) step \(step) of \(steps)"
        return "stopped on request \(at); checkpoint written; continue with: sparsetrain train --resume \(directory)"
    }
    /// Exit code a job script can requeue on.
    public var exitCode: Int32 { Self.requeueCode }
    public var isError: Bool { false }
    public static let requeueCode: Int32 = 3
}
