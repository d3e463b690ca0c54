import Comm

extension Trainer {
    /// With `bn: local` each rank's running statistics follow its own batches. Before an epoch's
    /// evaluation and checkpoint they are replaced by their mean over ranks, so every rank
    /// evaluates the model that is saved (rank 0's) and `eval` of the checkpoint agrees with
    /// metrics.jsonl.
    func averageLocalBatchNormStatistics() throws {
        guard config.bn == "local", comm.size > 1, !network.batchNorms.isEmpty else { return }
        var stats: [Double] = []
        for bn in network.batchNorms {
            stats += bn.runningMean.map(Double.init)
            stats += bn.runningVar.map(Double.init)
        }
        try comm.allreduce(&stats, op: .sum)
        var at = 0
        for bn in network.batchNorms {
            let n = bn.channels, scale = 1 / Double(comm.size)
            let mean = stats[at..<(at + n)].map { Float($0 * scale) }
            let variance = stats[(at + n)..<(at + 2 * n)].map { Float($0 * scale) }
            bn.setRunningStatistics(mean: mean, variance: variance)
            at += 2 * n
        }
    }
}
