import Foundation
import NN
import Tensor

/// Iterative Synflow (Tanaka et al. 2020): data-free pruning scores `|∂R/∂θ ⊙ θ|` with
/// `R = 1ᵀ(∏_l |W_l|)1` (summed over every input-to-output path of the network), pruned to the
/// target density over `rounds` rounds with the exponential schedule `density^{k/rounds}` and one
/// global threshold.
///
/// R is computed by the network itself: weights replaced by `|θ|·mask`, batch norm in evaluation
/// mode with running statistics (0, 1) and `|γ|`, `|β|`, an input of ones. With non-negative
/// weights and inputs every ReLU is the identity and the network is a linear map, so R spans many
/// orders of magnitude (≈ 10³⁰ for ResNet-20, beyond Float for deeper nets). The scores are kept
/// in block floating point (`SynflowScores`): no weight is rescaled — rescaling layers changes
/// the relative weight of paths that pass through different layers (a residual block's main
/// branch against its shortcut) and so the ranking.
///
/// - Parameter shortcuts: `.dense` leaves the projection-shortcut convolutions of residual blocks
///   out of the ranking and unpruned (the Synflow authors' `prune_residual=False`), the other
///   layers taking the rest of the global budget `density` (an error if the shortcuts alone
///   exceed it); `.prune` scores them like any layer.
/// - Returns: nothing; the mask (1 = kept) of the maskable layers is written into
///   `network.store.mask`.
public func synflowPrune(
    _ network: Network, layers: [MaskableLayer], density: Double, rounds: Int = 100,
    shortcuts: SynflowShortcuts = .dense
) throws {
    guard density > 0, density <= 1 else { throw SparsityError("density \(density) is outside (0, 1]") }
    let (scored, unscored) = network.synflowPartition(layers, shortcuts: shortcuts)
    let total = scored.reduce(0) { $0 + $1.count }
    let denseCount = unscored.reduce(0) { $0 + $1.count }
    let target = (density * Double(total + denseCount) - Double(denseCount)) / Double(max(1, total))
    guard target > 0 else {
        throw SparsityError(String(format: "density %.6g is below what the dense shortcut convolutions alone take (%.6g); synflow_shortcuts prune scores them too", density, Double(denseCount) / Double(total + denseCount)))
    }
    try synflowPrune(network, scored: scored, unscored: unscored, density: target, rounds: rounds)
}

/// Synflow on `scored` down to `density` of their weights; `unscored` set dense.
func synflowPrune(
    _ network: Network, scored: [MaskableLayer], unscored: [MaskableLayer], density target: Double, rounds: Int
) throws {
    guard rounds > 0 else { throw SparsityError("Synflow needs at least one round") }
    guard !scored.isEmpty else { throw SparsityError("Synflow has no layers to score") }
    let store = network.store
    for layer in unscored { for i in layer.offset..<(layer.offset + layer.count) { store.mask[i] = 1 } }
    let total = scored.reduce(0) { $0 + $1.count }
    var offsets: [Int] = []
    offsets.reserveCapacity(total)
    var keys: [Float] = []
    keys.reserveCapacity(total)
    for round in 1...rounds {
        let scores = try SynflowScores(network, layers: scored)
        // Active weights ranked by log score (relative to the largest, so Float keeps 1e-6
        // relative precision); the lowest go until density^(round/rounds) remains.
        offsets.removeAll(keepingCapacity: true)
        keys.removeAll(keepingCapacity: true)
        let top = scores.logScores.joined().max() ?? 0
        for (l, layer) in scored.enumerated() {
            for j in 0..<layer.count where store.mask[layer.offset + j] != 0 {
                offsets.append(layer.offset + j)
                let s = scores.logScores[l][j]
                keys.append(s == -.infinity || !top.isFinite ? -.infinity : Float(s - top))
            }
        }
        let keep = Int((pow(min(1, target), Double(round) / Double(rounds)) * Double(total)).rounded())
        guard keep < keys.count else { continue }
        // Ties broken by position, so the result is deterministic.
        let drop = keys.withUnsafeBufferPointer { smallestIndices($0, count: keys.count - keep) }
        for d in drop { store.mask[offsets[Int(d)]] = 0 }
    }
}

/// Whether Synflow scores and prunes the 1×1 projection shortcuts of residual blocks.
public enum SynflowShortcuts: String, CaseIterable, Sendable {
    /// Left out of the ranking and kept dense, the other layers taking the rest of the budget (the
    /// default, as in the Synflow authors' code, `prune_residual=False`, where the paper's
    /// ER-Synflow ratios come from). Scored, a shortcut's paths carry a small share of the flow
    /// (one weight layer against a main branch's two or three) and ResNet-18 at sparsity 0.9
    /// loses its stage-3 and stage-4 shortcuts entirely.
    case dense
    /// Scored and pruned like every other maskable layer.
    case prune
}

/// Per-layer densities of a Synflow mask: the ratios ER-Synflow draws random masks with (rescaled
/// to the global target by `layerwiseDensities`). As in the Synflow authors' code, `density` is
/// that of the scored layers; with `.dense` the shortcuts' ratio is 1. The network's own mask is
/// left as it was.
public func synflowLayerDensities(
    _ network: Network, layers: [MaskableLayer], density: Double, rounds: Int = 100,
    shortcuts: SynflowShortcuts = .dense
) throws -> [Double] {
    guard density > 0, density <= 1 else { throw SparsityError("density \(density) is outside (0, 1]") }
    let (scored, unscored) = network.synflowPartition(layers, shortcuts: shortcuts)
    return try prunedLayerDensities(network, layers: layers) {
        try synflowPrune(network, scored: scored, unscored: unscored, density: density, rounds: rounds)
    }
}

extension Network {
    /// `layers` split into those Synflow scores and those it leaves dense.
    func synflowPartition(_ layers: [MaskableLayer], shortcuts: SynflowShortcuts) -> (scored: [MaskableLayer], unscored: [MaskableLayer]) {
        guard shortcuts == .dense else { return (layers, []) }
        let offsets = shortcutWeightOffsets
        return (layers.filter { !offsets.contains($0.offset) }, layers.filter { offsets.contains($0.offset) })
    }

    /// Offsets of the weights of every maskable layer inside a residual block's shortcut branch.
    public var shortcutWeightOffsets: Set<Int> {
        var offsets = Set<Int>()
        func visit(_ layer: Layer) {
            if let seq = layer as? Sequential { seq.layers.forEach(visit) }
            if let block = layer as? ResidualBlock {
                visit(block.main)
                block.shortcut?.parameterRefs.forEach { offsets.insert($0.offset) }
            }
        }
        visit(body)
        return offsets
    }
}
