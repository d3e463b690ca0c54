import Foundation
import NN

/// STR's soft threshold (Kusupati et al. 2020) inside the mask: one learned scalar `s_l` per
/// maskable layer and
///
///     w_eff = m ⊙ sign(w) ⊙ relu(|w| − σ(s_l))
///
/// With `g = dL/dw_eff`: `dL/dw = m ⊙ 1[|w| > σ(s)] ⊙ g` and
/// `dL/ds = −σ'(s) · Σ m · sign(w) · 1[|w| > σ(s)] · g`. Weights at or below the threshold get no
/// loss gradient (only weight decay); the mask is never left. In Float, σ(−200) = 0 exactly, so a
/// very negative `s` starts with no threshold at all.
public final class SoftThreshold: WeightTransform {
    public let layers: [MaskableLayer]
    /// `s_l`, one scalar parameter per maskable layer, named `<layer>.threshold`.
    public let thresholds: [ParameterRef]

    /// Registers the thresholds (call before the store is allocated), each starting at `initial`.
    public init(store: ParameterStore, initial: Float) {
        layers = MaskableLayer.all(in: store)
        thresholds = layers.map { l in
            let base = l.name.hasSuffix(".weight") ? String(l.name.dropLast(7)) : l.name
            return store.register("\(base).threshold", shape: [1], maskable: false, initializer: .constant(initial))
        }
    }

    public func didAllocate(_ store: ParameterStore, seed: UInt64) {}

    public var derivedParameters: [ParameterRef] { thresholds }

    /// `σ(s_l)` of every layer.
    public func thresholdValues(_ store: ParameterStore) -> [Float] {
        thresholds.map { sigmoid(store.value($0)[0]) }
    }

    public func writeEffective(_ store: ParameterStore) {
        for (l, t) in zip(layers, thresholdValues(store)) {
            let w = store.values.baseAddress! + l.offset, m = store.mask.baseAddress! + l.offset
            let e = store.effective.baseAddress! + l.offset
            for i in 0..<l.count {
                let a = abs(w[i])
                e[i] = m[i] != 0 && a > t ? (w[i] < 0 ? t - a : a - t) : 0
            }
        }
    }

    public func backpropagate(_ store: ParameterStore) {
        for (l, s) in zip(layers, thresholds) {
            let sv = store.value(s)[0], t = sigmoid(sv)
            let w = store.values.baseAddress! + l.offset, m = store.mask.baseAddress! + l.offset
            let g = store.gradients.baseAddress! + l.offset
            var signed = 0.0
            for i in 0..<l.count {
                if m[i] != 0 && abs(w[i]) > t {
                    signed += Double(w[i] < 0 ? -g[i] : g[i])
                } else {
                    g[i] = 0
                }
            }
            store.gradient(s)[0] = Float(-Double(t) * Double(1 - t) * signed)
        }
    }

    public func effectiveCounts(_ store: ParameterStore) -> [Int] {
        layers.map { l in
            let e = store.effective.baseAddress! + l.offset
            var n = 0
            for i in 0..<l.count where e[i] != 0 { n &+= 1 }
            return n
        }
    }

    /// Writes into `proposal` (store layout, holding the current mask) the mask of the weights
    /// above their layer's threshold: `m ∧ (|w| > σ(s_l))`.
    public func keepAboveThreshold(_ store: ParameterStore, proposal: UnsafeMutableBufferPointer<Float>) {
        for (l, t) in zip(layers, thresholdValues(store)) {
            for i in l.offset..<(l.offset + l.count) where proposal[i] != 0 && !(abs(store.values[i]) > t) {
                proposal[i] = 0
            }
        }
    }
}

/// `1 / (1 + e^(−s))` in Float (0 for s ≤ −104, where e^(−s) overflows).
@inline(__always)
func sigmoid(_ s: Float) -> Float { 1 / (1 + exp(-s)) }
