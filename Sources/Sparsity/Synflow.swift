import Foundation
import NN
import Tensor

/// Iterative Synflow (Tanaka et al. 2020): data-free pruning scores `|∂R/∂θ ⊙ θ|` with
/// `R = 1ᵀ(∏_l |W_l|)1`, pruned to the target density over `rounds` rounds with the exponential
/// schedule `density^{k/rounds}`.
///
/// R is computed by the network itself: weights replaced by `|θ|·mask`, batch norm in evaluation
/// mode with running statistics (0, 1) and `|γ|`, `|β|`, an input of ones. With non-negative
/// weights and inputs every ReLU is the identity, so the forward pass is the product of the
/// absolute weight matrices. Each layer's weights are divided by their mean absolute row sum
/// so R stays in float range; that multiplies every score by the same constant and leaves the
/// ranking unchanged. The network's values and statistics are restored afterwards.
/// - Returns: the mask (1 = kept) of the maskable layers, written into `network.store.mask`.
public func synflowPrune(_ network: Network, layers: [MaskableLayer], density: Double, rounds: Int = 100) throws {
    guard density > 0, density <= 1 else { throw SparsityError("density \(density) is outside (0, 1]") }
    guard rounds > 0 else { throw SparsityError("Synflow needs at least one round") }
    let store = network.store
    let saved = Array(store.values)
    let savedStats = network.batchNorms.map { ($0.runningMean, $0.runningVar) }
    let wasTraining = network.training
    defer {
        for i in 0..<store.count { store.values[i] = saved[i] }
        for (bn, stats) in zip(network.batchNorms, savedStats) {
            bn.setRunningStatistics(mean: stats.0, variance: stats.1)
        }
        network.training = wasTraining
    }
    network.training = false
    for bn in network.batchNorms {
        bn.setRunningStatistics(mean: Array(repeating: 0, count: bn.channels), variance: Array(repeating: 1, count: bn.channels))
    }
    // |θ|, with each maskable layer rescaled to a mean absolute row sum of 1.
    var magnitude = saved.map { abs($0) }
    for l in layers {
        let rowSums = (0..<l.outUnits).map { o -> Double in
            (0..<(l.inUnits * l.kernel)).reduce(0.0) { $0 + Double(magnitude[l.offset + o * l.inUnits * l.kernel + $1]) }
        }
        let mean = rowSums.reduce(0, +) / Double(l.outUnits)
        if mean > 0 { for i in l.offset..<(l.offset + l.count) { magnitude[i] = Float(Double(magnitude[i]) / mean) } }
    }
    let total = layers.reduce(0) { $0 + $1.count }
    let ones = [Float](repeating: 1, count: network.imageSize)
    let seedGradient = Tensor(Shape(n: 1, c: network.classes))
    for i in 0..<network.classes { seedGradient.data[i] = 1 }
    for round in 1...rounds {
        for i in 0..<store.count { store.values[i] = magnitude[i] * store.mask[i] }
        store.zeroGradients()
        _ = ones.withUnsafeBufferPointer { network.forward(images: $0.baseAddress!, batch: 1) }
        network.backward(seedGradient)
        // Scores of the maskable weights still active; keep the top density^(round/rounds).
        var scores: [(Float, Int)] = []
        scores.reserveCapacity(total)
        for l in layers {
            for i in l.offset..<(l.offset + l.count) where store.mask[i] != 0 {
                scores.append((abs(store.gradients[i] * store.values[i]), i))
            }
        }
        let keep = Int((pow(density, Double(round) / Double(rounds)) * Double(total)).rounded())
        guard keep < scores.count else { continue }
        // Remove the lowest scores (ties broken by position, so the result is deterministic).
        scores.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        for (_, i) in scores.prefix(scores.count - keep) { store.mask[i] = 0 }
    }
}

/// Per-layer densities of a Synflow mask at `density`: the ratios ER-Synflow draws random masks
/// with. The network's own mask is left as it was.
public func synflowLayerDensities(_ network: Network, layers: [MaskableLayer], density: Double, rounds: Int = 100) throws -> [Double] {
    try prunedLayerDensities(network, layers: layers) {
        try synflowPrune(network, layers: layers, density: density, rounds: rounds)
    }
}
