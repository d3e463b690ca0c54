import Tensor

/// The sparse side of a masked weight used as a matrix W[rows × cols] on batch-innermost
/// activations (a linear layer; a 1×1 stride-1 convolution, whose columns are images × pixels):
/// the compressed indices of its mask, its values in index order, and the three passes, each
/// dense or sparse (see `MaskedPasses`).
final class MaskedMatmul: MaskedPasses {
    let rows: Int, cols: Int
    let byRow: SparseIndex
    /// The weights in the order of `byRow`, gathered at the start of a pass from the store's
    /// packed values (or the dense weight): the kernels then read them as one stream. The input
    /// gradient scatters over the same index with the same values, so a sparse forward's gather
    /// serves it too (the weights do not change in between).
    private(set) var rowValues: UnsafeMutablePointer<Float>
    private var valuesCapacity = 1
    /// `rowValues` hold the current weights (gathered by the last forward, not yet used by the
    /// input gradient).
    private var rowValuesFresh = false

    init(name: String, weight: ParameterRef, rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        byRow = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
        rowValues = .allocate(capacity: 1)
        super.init(name: name, weight: weight)
    }

    deinit { rowValues.deallocate() }

    override var activeCount: Int { byRow.count }
    override var activeOffsets: UnsafeMutablePointer<Int32> { byRow.weightOffset }

    /// (The index of a linear weight comes from the mask: its source blocks are not in
    /// row-major order.)
    override func rebuild(mask: () -> UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        byRow.rebuild(mask: mask(), threads: threads)
        rowValuesFresh = false
        if byRow.count > valuesCapacity {
            rowValues.deallocate()
            valuesCapacity = byRow.count
            rowValues = .allocate(capacity: valuesCapacity)
        }
    }

    /// `Y (+)= (W⊙M)·X` over `n` columns (row strides `ldx`, `ldy`), dense (`dense()`) or sparse;
    /// `prepare()` runs before either (e.g. writes the bias that `accumulate` adds onto), also
    /// before each timed run. `inputGradientFollows`: the backward will compute `dX` (which then
    /// reuses the values a sparse forward gathered).
    func forward(_ store: ParameterStore, x: UnsafePointer<Float>, ldx: Int, n: Int, y: UnsafeMutablePointer<Float>,
                 ldy: Int, accumulate: Bool, inputGradientFollows: Bool, _ ctx: Context,
                 prepare: () -> Void, dense: () -> Void) {
        rowValuesFresh = false
        let sparse = {
            prepare()
            SparseKernels.gatherValues(self.byRow, weights: self.sparseWeights(store), into: self.rowValues, threads: ctx.threads)
            SparseKernels.multiply(self.byRow, weights: self.rowValues, weightsInIndexOrder: true, x: x, ldx: ldx, n: n,
                                   y: y, ldy: ldy, accumulate: accumulate, isa: ctx.kernelISA, threads: ctx.threads)
        }
        run(.forward, n: n, ctx, dense: { prepare(); dense() }, sparse: sparse)
        rowValuesFresh = inputGradientFollows && lastPaths[KernelPass.forward.rawValue] == .sparse
    }

    /// `dX = (W⊙M)ᵀ·dY` over `n` columns, dense (`dense()`) or by scattering over the forward
    /// index (with the values the forward pass gathered, else gathered now).
    func inputGradient(_ store: ParameterStore, dy: UnsafePointer<Float>, lddy: Int, n: Int,
                       dx: UnsafeMutablePointer<Float>, lddx: Int, _ ctx: Context, dense: () -> Void) {
        let sparse = {
            if !self.rowValuesFresh {
                SparseKernels.gatherValues(self.byRow, weights: self.sparseWeights(store), into: self.rowValues,
                                           threads: ctx.threads)
            }
            SparseKernels.scatterTransposed(self.byRow, values: self.rowValues, dy: dy, lddy: lddy, n: n, dx: dx,
                                            lddx: lddx, isa: ctx.kernelISA, threads: ctx.threads)
        }
        run(.inputGradient, n: n, ctx, dense: dense, sparse: sparse)
        rowValuesFresh = false
    }

    /// `dW += dY·Xᵀ` over `n` columns: `dense(target, β)` or only at the mask's positions
    /// (see `MaskedPasses.weightGradient`).
    func weightGradient(_ store: ParameterStore, dy: UnsafePointer<Float>, lddy: Int, x: UnsafePointer<Float>, ldx: Int,
                        n: Int, _ ctx: Context, dense: (_ target: UnsafeMutablePointer<Float>, _ beta: Float) -> Void) {
        weightGradient(store, n: n, ctx, dense: dense) { output in
            SparseKernels.sampledProduct(self.byRow, dy: dy, lddy: lddy, x: x, ldx: ldx, n: n, into: output,
                                         isa: ctx.kernelISA, threads: ctx.threads)
        }
    }
}

/// The masked matmul of a layer when its passes may run sparse (see `maskedPasses`).
func maskedMatmul(_ existing: inout MaskedMatmul?, name: String, weight: ParameterRef, rows: Int, cols: Int,
                  store: ParameterStore, _ ctx: Context) -> MaskedMatmul? {
    maskedPasses(&existing, store: store, weight: weight, ctx) { MaskedMatmul(name: name, weight: weight, rows: rows, cols: cols) }
}
