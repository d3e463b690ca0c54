import Foundation
import NN
import Tensor

/// Synflow's scores `|θ ⊙ ∂R/∂θ|` of the active weights, in natural log, and `log R`, computed in
/// block floating point so that no magnitude overflows or underflows Float.
///
/// The network with weights `|θ|·mask` on an all-ones input is linear and non-negative. The
/// forward pass runs one top-level unit at a time (a layer, or a whole residual block); each
/// unit's output is divided by its maximum `s` before the next unit reads it and `log s` is
/// added to the running exponent, so a unit sees its true input times `e^{−a}` (`a` = exponent
/// of its input). Backward does the same with the gradient (exponent `b` of the gradient at the
/// unit's output). A weight inside the unit then has true score `computed · e^{a + b}`: the unit is
/// linear in its input and the score is bilinear in (input, output gradient). Biases, which add
/// rather than multiply, are divided by `e^{a}` while the unit runs; that is exact for top-level
/// layers (the classifier's bias) and for biases inside a residual block that are zero, as batch
/// norm's β is at initialisation.
///
/// The network's values, mask and batch-norm statistics are restored afterwards; its gradients
/// hold the last computation.
public struct SynflowScores {
    /// `log R`.
    public let logR: Double
    /// Per layer of `layers`, per weight: `log |θ ∂R/∂θ|` (−∞ for inactive weights or zero flow).
    public let logScores: [[Double]]

    public init(_ network: Network, layers: [MaskableLayer]) throws {
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
        for i in 0..<store.count { store.values[i] = abs(saved[i]) * store.mask[i] }
        store.refreshEffective()
        store.zeroGradients()

        let units = Self.units(of: network.body)
        let ctx = network.ctx
        // Forward: unit i reads inputs[i] = (true input)·e^{−inExponent[i]}.
        var x = Tensor(Shape(n: 1, c: network.inputChannels, h: network.inputHeight, w: network.inputWidth))
        for i in 0..<x.count { x.data[i] = 1 }
        var inputs: [Tensor] = []
        var inExponent: [Double] = []
        var exponent = 0.0
        for unit in units {
            inputs.append(x)
            inExponent.append(exponent)
            let scale = Float(exp(-exponent))
            for ref in unit.parameterRefs where store.parameters[ref.index].name.hasSuffix(".bias") {
                for j in ref.offset..<(ref.offset + ref.count) { store.values[j] = abs(saved[j]) * scale }
            }
            let y = unit.forward(x, ctx)
            let (normalised, logScale) = Self.normalisedCopy(y)
            x = normalised
            exponent += logScale
        }
        let flow = (0..<x.count).reduce(0.0) { $0 + Double(x.data[$1]) }
        logR = flow > 0 ? exponent + log(flow) : -.infinity

        // Backward from ∂R/∂logits = 1; unit i's parameter gradients carry e^{−(a_i + b_i)}.
        var unitExponent = [Double](repeating: 0, count: units.count)
        var g = Tensor(Shape(n: 1, c: network.classes))
        for i in 0..<g.count { g.data[i] = 1 }
        var gradientExponent = 0.0
        for (i, unit) in units.enumerated().reversed() {
            unitExponent[i] = inExponent[i] + gradientExponent
            g = unit.backward(g, ctx)
            guard i > 0, g.count > 0 else { break }
            var m: Float = 0
            for j in 0..<g.count { m = max(m, abs(g.data[j])) }
            if m > 0, m.isFinite {
                let inv = 1 / m
                for j in 0..<g.count { g.data[j] *= inv }
                gradientExponent += log(Double(m))
            }
        }
        ctx.release(g)

        var exponentOfOffset: [Int: Double] = [:]
        for (unit, e) in zip(units, unitExponent) {
            for ref in unit.parameterRefs { exponentOfOffset[ref.offset] = e }
        }
        logScores = try layers.map { layer in
            guard let e = exponentOfOffset[layer.offset] else {
                throw SparsityError("Synflow cannot find layer \(layer.name) in the network")
            }
            return (0..<layer.count).map { j in
                let s = abs(Double(store.gradients[layer.offset + j]) * Double(store.values[layer.offset + j]))
                return s > 0 ? log(s) + e : -.infinity
            }
        }
    }

    /// The network's top-level units: layers of nested `Sequential`s, each other layer whole.
    static func units(of layer: Layer) -> [Layer] {
        if let seq = layer as? Sequential { return seq.layers.flatMap(units) }
        return [layer]
    }

    /// A copy of `y` divided by its largest magnitude, and the log of that magnitude (0 for an
    /// all-zero `y`).
    static func normalisedCopy(_ y: Tensor) -> (Tensor, Double) {
        let copy = Tensor(y.shape)
        var m: Float = 0
        for j in 0..<y.count { m = max(m, abs(y.data[j])) }
        let inv: Float = m > 0 && m.isFinite ? 1 / m : 1
        for j in 0..<y.count { copy.data[j] = y.data[j] * inv }
        return (copy, m > 0 && m.isFinite ? log(Double(m)) : 0)
    }
}
