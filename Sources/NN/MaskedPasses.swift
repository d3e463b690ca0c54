import Dispatch
import Tensor

/// Which implementation ran a pass of a masked layer.
public enum KernelPath: String, Sendable, Codable {
    case dense, sparse
}

/// The passes of a masked layer's step.
public enum KernelPass: Int, CaseIterable, Sendable {
    case forward, inputGradient, weightGradient
}

/// What a masked layer ran in its last step, for `bench step` and the logs.
public struct KernelReport: Sendable, Equatable {
    public var name: String
    /// Active fraction of the layer's weight.
    public var density: Double
    /// Paths of the last forward, input-gradient and weight-gradient passes (nil: not run).
    public var forward: KernelPath?
    public var inputGradient: KernelPath?
    public var weightGradient: KernelPath?
    /// Forward + backward seconds of the layer while `ctx.profiling`, since it was built.
    public var seconds: Double
    /// What its dense passes run (a convolution's algorithm: "Winograd", "direct", …; nil: GEMM).
    public var denseAlgorithm: String? = nil
    /// Per pass (forward, input gradient, weight gradient): both paths as timed when this layer
    /// chose between them (`auto`), or nil (not timed by this layer: a fixed mode, a choice
    /// restored from a checkpoint, a layer that runs dense untimed).
    public var timed: [PassTiming?] = [nil, nil, nil]
}

/// One pass of a masked layer timed both ways (the faster of two runs each), in seconds.
public struct PassTiming: Sendable, Equatable {
    public var dense: Double, sparse: Double
    /// In `.auto` mode a pass runs sparse when its sparse time is below this fraction of its dense time.
    public static let sparseBelowDenseFraction = 0.9
    /// The path `.auto` takes for these times.
    public var path: KernelPath { sparse < Self.sparseBelowDenseFraction * dense ? .sparse : .dense }
}

/// The dense-or-sparse passes of one masked weight: which path each pass takes, where the
/// sparse weight gradient goes, and the report of the last step. Subclasses own the sparse
/// index of their layer kind (`MaskedMatmul`, `MaskedConvolution`) and rebuild it in place when
/// the store's mask generation moves.
///
/// Choosing (`SparseKernelMode.auto`): both paths are timed (twice each, the faster run kept)
/// the first time a pass runs at a size `n` and number of active weights; sparse is taken when
/// it is at least 10% faster. Above density `alwaysDenseAbove` the dense path is taken untimed
/// (the sparse kernels are slower than sgemm there on every CPU measured) and the layer keeps no
/// sparse index at all. A change of the mask that keeps
/// the number of active weights (RiGL) keeps the choices; they live in `Context.kernelChoices`.
class MaskedPasses {
    /// In `.auto` mode a weight denser than this runs dense without timing.
    static let alwaysDenseAbove = 0.5
    let name: String
    let weight: ParameterRef
    private var builtGeneration = -1
    /// Paths of the last step, per pass.
    private(set) var lastPaths: [KernelPath?] = [nil, nil, nil]
    /// Per pass: the timings of the last choice this layer made (see `KernelReport.timed`).
    private var timings: [PassTiming?] = [nil, nil, nil]

    init(name: String, weight: ParameterRef) {
        self.name = name
        self.weight = weight
    }

    /// Active weights (entries of the sparse index).
    var activeCount: Int { preconditionFailure("MaskedPasses.activeCount is provided by a subclass") }
    /// Dense offset of each entry, in the order of the packed weight gradient.
    var activeOffsets: UnsafeMutablePointer<Int32> { preconditionFailure("provided by a subclass") }
    /// Rebuilds the sparse index from the weight's 0/1 mask (`mask()`), or from its active
    /// positions when known (ascending), with `threads` workers.
    func rebuild(mask: () -> UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        preconditionFailure("provided by a subclass")
    }

    var density: Double { Double(activeCount) / Double(max(1, weight.count)) }

    /// The weights the sparse passes read: the store's packed values when it keeps them (at the
    /// mask the index was built from), else the dense weights.
    func sparseWeights(_ store: ParameterStore) -> SparseWeights {
        guard let p = store.packedValues(weight) else { return .dense(store.forwardWeight(weight)) }
        precondition(store.packedPositions(weight)?.count == activeCount,
                     "\(name): the packed weights and the sparse index describe different masks")
        return .packed(p)
    }

    /// Rebuilds the index if the mask changed since it was built. A dense mask written out for
    /// it is given back after (`ParameterStore.releaseMaskPages`).
    func refresh(_ store: ParameterStore, threads: Int) {
        guard store.maskGeneration != builtGeneration else { return }
        var maskRead = false
        rebuild(mask: { maskRead = true; return UnsafePointer(store.maskValues(weight)) },
                activePositions: store.activePositions?(weight), threads: threads)
        if maskRead { store.releaseMaskPages(weight) }
        builtGeneration = store.maskGeneration
    }

    /// Runs `pass` over `n` columns dense or sparse (the closures have the same effect).
    func run(_ pass: KernelPass, n: Int, _ ctx: Context, dense: () -> Void, sparse: () -> Void) {
        let path = choose(pass, n: n, ctx, time: dense, sparse)
        lastPaths[pass.rawValue] = path
        if path == .sparse { sparse() } else { dense() }
    }

    /// `dW += ∂L/∂W` over `n` columns: `dense(target, β)` (into `target` with that β), or
    /// `sampled(output)` at the mask's positions only — born packed into the reducer's slot when
    /// the training step offers one, else into the dense gradient.
    ///
    /// The training step zeroes a weight's dense gradient according to where the previous step
    /// put it (`gradientPlacement`, still the previous one here): all of it after `.dense`, the
    /// active entries after `.atMaskOnly`, nothing after `.packed`. So after a sparse step the
    /// dense pass overwrites (β = 0; the layer is the weight's only writer in a step) and the
    /// sampled pass into the dense gradient first zeroes the active entries it adds to.
    func weightGradient(_ store: ParameterStore, n: Int, _ ctx: Context,
                        dense: (_ target: UnsafeMutablePointer<Float>, _ beta: Float) -> Void,
                        sampled: (SampledOutput) -> Void) {
        let g = store.gradient(weight)
        let previous = store.gradientPlacement[weight.index]
        let denseBeta: Float = previous == .dense ? 1 : 0
        store.gradientPlacement[weight.index] = .dense
        if ctx.denseWeightGradient {
            dense(g, denseBeta)
            lastPaths[KernelPass.weightGradient.rawValue] = .dense
            return
        }
        // Timing writes into scratch: the gradient accumulates and must see one pass only.
        var scratch: UnsafeMutablePointer<Float>?
        defer { scratch?.deallocate() }
        let size = weight.count
        let path = choose(.weightGradient, n: n, ctx, time: {
            if scratch == nil { scratch = .allocate(capacity: size) }
            dense(scratch!, 0)
        }, {
            if scratch == nil { scratch = .allocate(capacity: size) }
            scratch!.update(repeating: 0, count: max(1, self.activeCount))
            sampled(.packed(scratch!))
        })
        lastPaths[KernelPass.weightGradient.rawValue] = path
        guard path == .sparse else {
            dense(g, denseBeta)
            return
        }
        if let slot = store.packedGradientSlot?(weight), slot.count == activeCount {
            // Born packed: the reducer sends this slot as it is, the optimizer reads it.
            slot.update(repeating: 0)
            sampled(.packed(slot.baseAddress!))
            store.gradientPlacement[weight.index] = .packed
        } else {
            if previous == .packed {
                let offsets = activeOffsets
                for e in 0..<activeCount { g[Int(offsets[e])] = 0 }
            }
            sampled(.dense(g))
            store.gradientPlacement[weight.index] = .atMaskOnly
        }
    }

    /// The path for `pass` at size `n`; in `.auto` mode the first call for a (pass, n, active
    /// weights) times `dense` and `sparse` (which must have no lasting effect) and records the
    /// faster in `ctx.kernelChoices`.
    private func choose(_ pass: KernelPass, n: Int, _ ctx: Context, time dense: () -> Void,
                        _ sparse: () -> Void) -> KernelPath {
        switch ctx.sparseKernels {
        case .off: return .dense
        case .on: return .sparse
        case .auto:
            // (Weights denser than `alwaysDenseAbove` never get here: `maskedPasses` gives them none.)
            let key = "\(name)/\(pass)/\(n)/\(activeCount)"
            if let known = ctx.kernelChoices[key] { return known }
            var bestDense = Double.infinity, bestSparse = Double.infinity
            for _ in 0..<2 {
                bestDense = min(bestDense, seconds(dense))
                bestSparse = min(bestSparse, seconds(sparse))
            }
            let timing = PassTiming(dense: bestDense, sparse: bestSparse)
            ctx.kernelChoices[key] = timing.path
            timings[pass.rawValue] = timing
            return timing.path
        }
    }

    private func seconds(_ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }

    /// The report of the last step.
    func report(seconds: Double) -> KernelReport {
        KernelReport(name: name, density: density, forward: lastPaths[0], inputGradient: lastPaths[1],
                     weightGradient: lastPaths[2], seconds: seconds, timed: timings)
    }
}

/// The passes of a masked layer when they may run sparse: sparse kernels on (or auto, with the
/// weight's density at most `alwaysDenseAbove`), no weight transform; index up to date. Created
/// by `make` on first use; dropped (with its index) while the layer runs dense.
func maskedPasses<P: MaskedPasses>(_ existing: inout P?, store: ParameterStore, weight: ParameterRef, _ ctx: Context,
                                   make: () -> P) -> P? {
    guard ctx.sparseKernels != .off, store.transform == nil else { return nil }
    if ctx.sparseKernels == .auto, store.activeFraction(weight) > MaskedPasses.alwaysDenseAbove {
        existing = nil
        return nil
    }
    let m = existing ?? make()
    existing = m
    m.refresh(store, threads: ctx.threads)
    return m
}

/// What a masked layer ran in its last step: its passes' report, or (no sparse passes) its
/// density with dense paths (no input gradient for a first layer).
func kernelReport(_ passes: MaskedPasses?, name: String, weight: ParameterRef, store: ParameterStore,
                  computesInputGradient: Bool, seconds: Double) -> KernelReport {
    passes?.report(seconds: seconds)
        ?? KernelReport(name: name, density: store.activeFraction(weight), forward: .dense,
                        inputGradient: computesInputGradient ? .dense : nil, weightGradient: .dense, seconds: seconds)
}
extension Context {
    /// `kernelChoices` as text, one "key=path" line each, sorted (checkpoints, rank agreement).
    public var kernelChoicesText: String {
        get { kernelChoices.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.rawValue)" }.joined(separator: "\n") }
        set {
            kernelChoices = [:]
            for line in newValue.split(separator: "\n") {
                let parts = line.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let path = KernelPath(rawValue: String(parts[1])) { kernelChoices[String(parts[0])] = path }
            }
        }
    }
}
