import NN
import Tensor

/// SNIP (Lee et al. 2019): connection sensitivity `|∂L/∂θ ⊙ θ|` of the loss on data at
/// initialisation, summed over `batches`; the top `density` fraction of all maskable weights
/// (globally, ties to the lower position) is kept.
/// - Returns: the mask (1 = kept) of the maskable layers, written into `network.store.mask`.
///   The network's weights, gradients and BN statistics are unchanged afterwards.
/// - Parameter batches: NCHW images and labels.
public func snipPrune(
    _ network: Network, layers: [MaskableLayer], density: Double, batches: [(images: [Float], labels: [Int32])]
) throws {
    guard density > 0, density <= 1 else { throw SparsityError("density \(density) is outside (0, 1]") }
    guard !batches.isEmpty else { throw SparsityError("SNIP needs at least one batch of data") }
    let store = network.store
    let savedStats = network.batchNorms.map { ($0.runningMean, $0.runningVar) }
    let savedHook = store.onGradientReady
    store.onGradientReady = nil
    defer {
        for (bn, s) in zip(network.batchNorms, savedStats) { bn.setRunningStatistics(mean: s.0, variance: s.1) }
        store.onGradientReady = savedHook
        store.zeroGradients()
    }
    let total = batches.reduce(0) { $0 + $1.labels.count }
    let loss = SoftmaxCrossEntropy()
    store.zeroGradients()
    for b in batches {
        let logits = b.images.withUnsafeBufferPointer { network.forward(images: $0.baseAddress!, batch: b.labels.count) }
        _ = b.labels.withUnsafeBufferPointer { loss(logits, labels: $0.baseAddress!, normalizer: Float(total), ctx: network.ctx) }
        network.backward(loss.gradient)
    }
    // Keep the largest scores: drop the smallest N − keep (negated keys keep ties to the lower position).
    var offsets: [Int] = [], keys: [Float] = []
    for l in layers {
        for i in l.offset..<(l.offset + l.count) {
            offsets.append(i)
            keys.append(-abs(store.gradients[i] * store.values[i]))
        }
    }
    let keep = Int((density * Double(keys.count)).rounded())
    for i in offsets { store.mask[i] = 0 }
    for k in keys.withUnsafeBufferPointer({ smallestIndices($0, count: keep) }) { store.mask[offsets[Int(k)]] = 1 }
}

/// Per-layer densities of a SNIP mask at `density`: the ratios ER-SNIP draws random masks with.
/// The network's own mask is left as it was.
public func snipLayerDensities(
    _ network: Network, layers: [MaskableLayer], density: Double, batches: [(images: [Float], labels: [Int32])]
) throws -> [Double] {
    try prunedLayerDensities(network, layers: layers) {
        try snipPrune(network, layers: layers, density: density, batches: batches)
    }
}

/// Per-layer densities of the mask `prune` writes into `network.store.mask`; the network's own
/// mask is restored afterwards.
func prunedLayerDensities(_ network: Network, layers: [MaskableLayer], _ prune: () throws -> Void) throws -> [Double] {
    let saved = Array(network.store.mask)
    defer { for i in saved.indices { network.store.mask[i] = saved[i] } }
    try prune()
    let active = activeCounts(layers, mask: UnsafeBufferPointer(network.store.mask))
    return zip(active, layers).map { Double($0) / Double($1.count) }
}
