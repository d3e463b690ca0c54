import NN
import Tensor

/// SNIP (Lee et al. 2019): connection sensitivity `|∂L/∂θ ⊙ θ|` of the loss on data at
/// initialisation, summed over `batches`; the top `density` fraction of all maskable weights
/// (globally) is kept. Returns the per-layer densities of that mask — the ratios ER-SNIP draws
/// random masks with. The network's weights, gradients, mask and BN statistics are unchanged
/// afterwards.
/// - Parameter batches: NCHW images and labels.
public func snipLayerDensities(
    _ network: Network, layers: [MaskableLayer], density: Double, batches: [(images: [Float], labels: [Int32])]
) throws -> [Double] {
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
    var scores: [(Float, Int)] = []
    for l in layers {
        for i in l.offset..<(l.offset + l.count) { scores.append((abs(store.gradients[i] * store.values[i]), i)) }
    }
    let keep = Int((density * Double(scores.count)).rounded())
    // Highest scores first; ties by position so the result is deterministic.
    scores.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
    var kept = [Int](repeating: 0, count: layers.count)
    let starts = layers.map(\.offset)
    for (_, i) in scores.prefix(keep) {
        var l = starts.count - 1
        while starts[l] > i { l -= 1 }
        kept[l] += 1
    }
    return zip(kept, layers).map { Double($0) / Double($1.count) }
}
