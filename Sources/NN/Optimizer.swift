import Foundation
import Tensor

/// SGD with momentum, as PyTorch applies it, followed by the mask:
/// `g = s·∇ + λ·w`, `v ← μ·v + g`, `d = g + μ·v` (Nesterov) or `v`, `w ← (w − η·d) ⊙ m`,
/// `v ← v ⊙ m`. After every step masked weights and their momentum are exactly +0 (selected,
/// not multiplied: `x · 0` could be −0, whose bits would differ between ranks).
/// `s` scales the gradient (1/ranks when ranks summed their gradients).
public struct SGD: Sendable {
    public var momentum: Float
    public var nesterov: Bool
    public var weightDecay: Float

    public init(momentum: Float = 0.9, nesterov: Bool = false, weightDecay: Float = 5e-4) {
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
    }

    public func step(_ store: ParameterStore, learningRate lr: Float, gradientScale: Float = 1, threads: Int = 1) {
        if store.hasPackedMomentum {
            // A packed momentum is kept at its mask's active positions: the same update is the
            // one over those entries after the masked weights are set to +0.
            var active: [[Int32]] = []
            for p in store.parameters where p.maskable {
                let w = store.value(p.ref), m = store.maskValues(p.ref)
                for i in 0..<p.ref.count where m[i] == 0 { w[i] = 0 }
                let positions = nonZeroPositions(of: m, count: p.ref.count)
                precondition(store.packedPositions(p.ref).map { $0 == positions } ?? true,
                             "\(p.name): the mask changed without its owner moving the packed momentum")
                active.append(positions)
            }
            step(store, learningRate: lr, gradientScale: gradientScale, active: active, threads: threads)
            return
        }
        let w = SendablePointer(store.values.baseAddress!), g = SendablePointer(store.gradients.baseAddress!)
        let v = SendablePointer(store.momentum.baseAddress!), m = SendablePointer(store.mask.baseAddress!)
        let mu = momentum, wd = weightDecay, nest = nesterov, s = gradientScale
        parallelChunks(store.count, chunks: store.count > 1 << 18 ? threads : 1) { r in
            let wp = w.pointer, gp = g.pointer, vp = v.pointer, mp = m.pointer
            var i = r.lowerBound
            if nest {
                while i < r.upperBound {
                    let grad = gp[i] * s + wd * wp[i]
                    let vel = mu * vp[i] + grad
                    let keep = mp[i] != 0
                    wp[i] = keep ? wp[i] - lr * (grad + mu * vel) : 0
                    vp[i] = keep ? vel : 0
                    i &+= 1
                }
            } else {
                while i < r.upperBound {
                    let vel = mu * vp[i] + (gp[i] * s + wd * wp[i])
                    let keep = mp[i] != 0
                    wp[i] = keep ? wp[i] - lr * vel : 0
                    vp[i] = keep ? vel : 0
                    i &+= 1
                }
            }
        }
    }

    /// The same update visiting only the mask's active entries of the maskable tensors
    /// (`active[t]`: ascending positions in maskable tensor t, in store order) and every entry of
    /// the others. Equal to `step` bit for bit when masked weights and momentum are +0 (they stay
    /// untouched, hence +0); at density d it reads and writes d of the maskable entries.
    /// `packedGradients[t]`, when given, holds tensor t's gradient packed (entry k belongs to
    /// position `active[t][k]`) instead of `store.gradients`. A packed momentum and packed
    /// values (`store.pack`) must be kept at `active[t]`; they are read and written in order.
    public func step(_ store: ParameterStore, learningRate lr: Float, gradientScale: Float = 1,
                     active: [[Int32]], packedGradients: [UnsafeMutablePointer<Float>?] = [], threads: Int = 1) {
        // The dense values as they are: a packed weight's values are taken from its packed copy.
        let w = SendablePointer(store.valueStorage.baseAddress!), g = SendablePointer(store.gradients.baseAddress!)
        let v = SendablePointer(store.momentum.baseAddress!)
        let mu = momentum, wd = weightDecay, nest = nesterov, s = gradientScale
        /// Weight `wp[i]` with gradient `g` and momentum `vp[j]` (j = i for dense momentum, the
        /// entry's rank for packed).
        @Sendable @inline(__always) func update(_ i: Int, _ wp: UnsafeMutablePointer<Float>, _ g: Float,
                                                _ j: Int, _ vp: UnsafeMutablePointer<Float>) {
            if nest {
                let grad = g * s + wd * wp[i]
                let vel = mu * vp[j] + grad
                wp[i] = wp[i] - lr * (grad + mu * vel)
                vp[j] = vel
            } else {
                let vel = mu * vp[j] + (g * s + wd * wp[i])
                wp[i] = wp[i] - lr * vel
                vp[j] = vel
            }
        }
        var t = 0
        for p in store.parameters {
            let o = p.ref.offset
            let wp = SendablePointer(w.pointer + o), gp = SendablePointer(g.pointer + o)
            if p.maskable {
                let packed = t < packedGradients.count ? packedGradients[t].map { SendablePointer($0) } : nil
                let packedV = store.packedMomentum(p.ref), packedW = store.packedValuesForUpdate(p.ref)
                precondition(packedV == nil || packedV!.count == active[t].count,
                             "\(p.name): the packed momentum is not kept at the active positions")
                let vp = SendablePointer(packedV?.baseAddress ?? v.pointer + o), vPacked = packedV != nil
                let pw = SendablePointer(packedW?.baseAddress ?? wp.pointer), wPacked = packedW != nil
                active[t].withUnsafeBufferPointer { list in
                    let idx = SendablePointer(UnsafeMutablePointer(mutating: list.baseAddress ?? UnsafePointer(bitPattern: 8)!))
                    parallelChunks(list.count, chunks: list.count > 1 << 15 ? threads : 1) { r in
                        let ip = idx.pointer, w = pw.pointer, v = vp.pointer
                        // The layouts apart, so that each loop has no branch (packed values come
                        // with packed momentum).
                        switch (packed?.pointer, vPacked, wPacked) {
                        case (let pg?, true, true): for k in r { update(k, w, pg[k], k, v) }
                        case (nil, true, true): for k in r { update(k, w, gp.pointer[Int(ip[k])], k, v) }
                        case (let pg?, true, false): for k in r { update(Int(ip[k]), w, pg[k], k, v) }
                        case (nil, true, false): for k in r { let i = Int(ip[k]); update(i, w, gp.pointer[i], k, v) }
                        case (let pg?, false, _): for k in r { let i = Int(ip[k]); update(i, w, pg[k], i, v) }
                        case (nil, false, _): for k in r { let i = Int(ip[k]); update(i, w, gp.pointer[i], i, v) }
                        }
                    }
                }
                t += 1
            } else {
                let vp = SendablePointer(v.pointer + o)
                parallelChunks(p.ref.count, chunks: p.ref.count > 1 << 18 ? threads : 1) { r in
                    for i in r { update(i, wp.pointer, gp.pointer[i], i, vp.pointer) }
                }
            }
        }
    }
}

/// Learning rate as a function of the (fractional) epoch.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case constant
        /// ×γ at each milestone epoch reached.
        case multiStep(milestones: [Double], gamma: Float)
        /// Cosine from the base rate down to `minimum` at the last epoch.
        case cosine(minimum: Float)
    }

    public var base: Float
    public var kind: Kind
    public var epochs: Double
    /// Linear warm-up from 0 over this many epochs.
    public var warmupEpochs: Double

    public init(base: Float, kind: Kind, epochs: Double, warmupEpochs: Double = 0) {
        self.base = base
        self.kind = kind
        self.epochs = epochs
        self.warmupEpochs = warmupEpochs
    }

    /// Rate at fractional epoch `e` (pass the epoch at the end of the step, e.g.
    /// `(step + 1) / stepsPerEpoch`, so warm-up never yields 0).
    public func rate(atEpoch e: Double) -> Float {
        if warmupEpochs > 0 && e < warmupEpochs { return base * Float(e / warmupEpochs) }
        switch kind {
        case .constant:
            return base
        case .multiStep(let milestones, let gamma):
            let passed = milestones.filter { e >= $0 }.count
            return base * Float(pow(Double(gamma), Double(passed)))
        case .cosine(let minimum):
            let span = max(epochs - warmupEpochs, 1e-9)
            let t = min(max((e - warmupEpochs) / span, 0), 1)
            return minimum + (base - minimum) * Float((1 + cos(Double.pi * t)) / 2)
        }
    }
}
