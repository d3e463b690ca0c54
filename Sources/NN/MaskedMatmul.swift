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
}

/// The sparse side of a masked weight used as a matrix W[rows × cols] on batch-innermost
/// activations (a linear layer; a 1×1 stride-1 convolution, whose columns are images × pixels):
/// the compressed indices of its mask (rebuilt in place when the store's mask generation moves),
/// its values in index order, and the three passes, each dense or sparse.
///
/// Choosing (`SparseKernelMode.auto`): both paths are timed (twice each, the faster run kept)
/// the first time a pass runs at a batch size and number of active weights; sparse is taken
/// when it is at least 10% faster. Above density 0.5 the dense path is taken untimed (the sparse
/// kernels are slower than sgemm there on every CPU measured). A change of the mask that keeps
/// the number of active weights (RiGL) keeps the choices; they live in `Context.kernelChoices`.
final class MaskedMatmul {
    let name: String
    let weight: ParameterRef
    let rows: Int, cols: Int
    let byRow: SparseIndex
    let byColumn: SparseIndex
    /// The weights in the order of the index a pass runs over (`byRow` for the forward pass,
    /// `byColumn` for the input gradient), gathered at the start of the pass: the kernels then
    /// read them as one stream instead of hopping through the dense weight.
    private(set) var values: UnsafeMutablePointer<Float>
    private var valuesCapacity = 1
    private var builtGeneration = -1
    /// Paths of the last step, per pass.
    private(set) var lastPaths: [KernelPath?] = [nil, nil, nil]

    init(name: String, weight: ParameterRef, rows: Int, cols: Int) {
        self.name = name
        self.weight = weight
        self.rows = rows
        self.cols = cols
        byRow = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
        byColumn = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .columns)
        values = .allocate(capacity: 1)
    }

    deinit { values.deallocate() }

    var density: Double { byRow.density }

    /// Rebuilds the indices if the mask changed since they were built.
    func refresh(_ store: ParameterStore) {
        guard store.maskGeneration != builtGeneration else { return }
        byRow.rebuild(mask: store.maskValues(weight))
        byColumn.rebuild(mask: store.maskValues(weight))
        if byRow.count > valuesCapacity {
            values.deallocate()
            valuesCapacity = byRow.count
            values = .allocate(capacity: valuesCapacity)
        }
        builtGeneration = store.maskGeneration
    }

    /// `Y (+)= (W⊙M)·X` over `n` columns (row strides `ldx`, `ldy`), dense (`dense()`) or sparse;
    /// `prepare()` runs before either (e.g. writes the bias that `accumulate` adds onto), also
    /// before each timed run.
    func forward(_ w: UnsafePointer<Float>, x: UnsafePointer<Float>, ldx: Int, n: Int, y: UnsafeMutablePointer<Float>,
                 ldy: Int, accumulate: Bool, _ ctx: Context, prepare: () -> Void, dense: () -> Void) {
        let sparse = {
            prepare()
            SparseKernels.gatherValues(self.byRow, weights: w, into: self.values, threads: ctx.threads)
            SparseKernels.multiply(self.byRow, weights: self.values, weightsInIndexOrder: true, x: x, ldx: ldx, n: n,
                                   y: y, ldy: ldy, accumulate: accumulate, isa: ctx.sparseISA, threads: ctx.threads)
        }
        run(.forward, n: n, ctx, dense: { prepare(); dense() }, sparse: sparse)
    }

    /// `dX = (W⊙M)ᵀ·dY` over `n` columns, dense (`dense()`) or over the transposed index.
    func inputGradient(_ w: UnsafePointer<Float>, dy: UnsafePointer<Float>, lddy: Int, n: Int,
                       dx: UnsafeMutablePointer<Float>, lddx: Int, _ ctx: Context, dense: () -> Void) {
        let sparse = {
            SparseKernels.gatherValues(self.byColumn, weights: w, into: self.values, threads: ctx.threads)
            SparseKernels.multiply(self.byColumn, weights: self.values, weightsInIndexOrder: true, x: dy, ldx: lddy, n: n,
                                   y: dx, ldy: lddx, isa: ctx.sparseISA, threads: ctx.threads)
        }
        run(.inputGradient, n: n, ctx, dense: dense, sparse: sparse)
    }

    /// `dW += dY·Xᵀ` over `n` columns: `dense(target, β)` (a GEMM into `target` with that β),
    /// or only at the mask's positions — born packed into the reducer's slot when the training
    /// step offers one, else into the dense gradient.
    ///
    /// The training step zeroes a weight's dense gradient according to where the previous step
    /// put it (`gradientPlacement`, still the previous one here): all of it after `.dense`, the
    /// active entries after `.atMaskOnly`, nothing after `.packed`. So after a sparse step the
    /// dense GEMM overwrites (β = 0; the layer is the weight's only writer in a step) and the
    /// sampled kernel into the dense gradient first zeroes the active entries it adds to.
    func weightGradient(_ store: ParameterStore, dy: UnsafePointer<Float>, lddy: Int, x: UnsafePointer<Float>, ldx: Int,
                        n: Int, _ ctx: Context, dense: (_ target: UnsafeMutablePointer<Float>, _ beta: Float) -> Void) {
        let g = store.gradient(weight)
        let previous = store.gradientPlacement[weight.index]
        let denseBeta: Float = previous == .dense ? 1 : 0
        store.gradientPlacement[weight.index] = .dense
        if ctx.denseWeightGradient {
            dense(g, denseBeta)
            lastPaths[KernelPass.weightGradient.rawValue] = .dense
            return
        }
        let sampled = { (output: SampledOutput) in
            SparseKernels.sampledProduct(self.byRow, dy: dy, lddy: lddy, x: x, ldx: ldx, n: n, into: output,
                                         isa: ctx.sparseISA, threads: ctx.threads)
        }
        // Timing writes into scratch: the gradient accumulates and must see one pass only.
        var scratch: UnsafeMutablePointer<Float>?
        defer { scratch?.deallocate() }
        let size = rows * cols
        let path = choose(.weightGradient, n: n, ctx, time: {
            if scratch == nil { scratch = .allocate(capacity: size) }
            dense(scratch!, 0)
        }, {
            if scratch == nil { scratch = .allocate(capacity: size) }
            scratch!.update(repeating: 0, count: max(1, self.byRow.count))
            sampled(.packed(scratch!))
        })
        lastPaths[KernelPass.weightGradient.rawValue] = path
        guard path == .sparse else {
            dense(g, denseBeta)
            return
        }
        if let slot = store.packedGradientSlot?(weight), slot.count == byRow.count {
            // Born packed: the reducer sends this slot as it is, the optimizer reads it.
            slot.update(repeating: 0)
            sampled(.packed(slot.baseAddress!))
            store.gradientPlacement[weight.index] = .packed
        } else {
            if previous == .packed {
                for e in 0..<byRow.count { g[Int(byRow.weightOffset[e])] = 0 }
            }
            sampled(.dense(g))
            store.gradientPlacement[weight.index] = .atMaskOnly
        }
    }

    private func run(_ pass: KernelPass, n: Int, _ ctx: Context, dense: () -> Void, sparse: () -> Void) {
        let path = choose(pass, n: n, ctx, time: dense, sparse)
        lastPaths[pass.rawValue] = path
        if path == .sparse { sparse() } else { dense() }
    }

    /// The path for `pass` at batch `n`; in `.auto` mode the first call for a (pass, n, active
    /// weights) times `dense` and `sparse` (which must have no lasting effect) and records the
    /// faster in `ctx.kernelChoices`.
    private func choose(_ pass: KernelPass, n: Int, _ ctx: Context, time dense: () -> Void,
                        _ sparse: () -> Void) -> KernelPath {
        switch ctx.sparseKernels {
        case .off: return .dense
        case .on: return .sparse
        case .auto:
            if density > 0.5 { return .dense }
            let key = "\(name)/\(pass)/\(n)/\(byRow.count)"
            if let known = ctx.kernelChoices[key] { return known }
            var bestDense = Double.infinity, bestSparse = Double.infinity
            for _ in 0..<2 {
                bestDense = min(bestDense, seconds(dense))
                bestSparse = min(bestSparse, seconds(sparse))
            }
            let choice: KernelPath = bestSparse < 0.9 * bestDense ? .sparse : .dense
            ctx.kernelChoices[key] = choice
            return choice
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
                     weightGradient: lastPaths[2], seconds: seconds)
    }
}

/// The masked matmul of a layer when its passes may run sparse: sparse kernels on, no weight
/// transform; indices up to date. Created on first use.
func maskedMatmul(_ existing: inout MaskedMatmul?, name: String, weight: ParameterRef, rows: Int, cols: Int,
                  store: ParameterStore, _ ctx: Context) -> MaskedMatmul? {
    guard ctx.sparseKernels != .off, store.transform == nil else { return nil }
    let m = existing ?? MaskedMatmul(name: name, weight: weight, rows: rows, cols: cols)
    existing = m
    m.refresh(store)
    return m
}

/// What a masked layer ran in its last step: its matmul's report, or (passes never sparse) its
/// density with dense paths.
func kernelReport(_ matmul: MaskedMatmul?, name: String, weight: ParameterRef, store: ParameterStore,
                  seconds: Double) -> KernelReport {
    matmul?.report(seconds: seconds)
        ?? KernelReport(name: name, density: Double(sum(store.maskValues(weight), weight.count)) / Double(weight.count),
                        forward: .dense, inputGradient: .dense, weightGradient: .dense, seconds: seconds)
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
