import Tensor

/// The sparse side of a masked weight used as a matrix W[rows × cols] on batch-innermost
/// activations (a linear layer; a 1×1 stride-1 convolution, whose columns are images × pixels):
/// the compressed indices of its mask, its values in index order, and the three passes, each
/// dense or sparse (see `MaskedPasses`).
final class MaskedMatmul: MaskedPasses {
    let rows: Int, cols: Int
    let byRow: SparseIndex
    /// The transposed index, kept only for wide products (a 1×1 convolution: n = images × pixels),
    /// whose input gradient runs the forward kernel over it with dX in registers. A linear layer
    /// (n = the batch) has none: its input gradient scatters over `byRow` (as fast at n = 128,
    /// and no second index to build, gather values into or hold); at n ≈ 1568 the scatter took
    /// 10–17 ms against 7–9 ms for the transposed product (2048 × 512, density 0.12).
    let byColumn: SparseIndex?
    /// The weights in the order of `byRow` (forward) and of `byColumn` (input gradient),
    /// gathered at the start of a pass from the store's packed values (or the dense weight): the
    /// kernels then read them as one stream. A sparse forward that will be followed by an input
    /// gradient gathers what that needs in the same read of the weight (they hold until the
    /// backward: the weights do not change in between).
    private(set) var rowValues: UnsafeMutablePointer<Float>
    private(set) var columnValues: UnsafeMutablePointer<Float>
    private var valuesCapacity = 1
    /// The last forward gathered the input gradient's values and they were not used yet.
    private var inputGradientValuesFresh = false

    init(name: String, weight: ParameterRef, rows: Int, cols: Int, transposedIndex: Bool) {
        self.rows = rows
        self.cols = cols
        byRow = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
        byColumn = transposedIndex ? SparseIndex(weightRows: rows, weightColumns: cols, orientation: .columns) : nil
        rowValues = .allocate(capacity: 1)
        columnValues = .allocate(capacity: 1)
        super.init(name: name, weight: weight)
    }

    deinit { rowValues.deallocate(); columnValues.deallocate() }

    override var activeCount: Int { byRow.count }
    override var activeOffsets: UnsafeMutablePointer<Int32> { byRow.weightOffset }

    /// (The indices of a linear weight come from the mask: their source blocks are not in
    /// row-major order.)
    override func rebuild(mask: () -> UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        let mask = mask()
        byRow.rebuild(mask: mask, threads: threads)
        byColumn?.rebuild(mask: mask, threads: threads)
        inputGradientValuesFresh = false
        if byRow.count > valuesCapacity {
            rowValues.deallocate(); columnValues.deallocate()
            valuesCapacity = byRow.count
            rowValues = .allocate(capacity: valuesCapacity)
            columnValues = .allocate(capacity: byColumn == nil ? 1 : valuesCapacity)
        }
    }

    /// `Y (+)= (W⊙M)·X` over `n` columns (row strides `ldx`, `ldy`), dense (`dense()`) or sparse;
    /// `prepare()` runs before either (e.g. writes the bias that `accumulate` adds onto), also
    /// before each timed run. `inputGradientFollows`: the backward will compute `dX` (so a sparse
    /// forward gathers the transposed index's values too, where there is one).
    func forward(_ store: ParameterStore, x: UnsafePointer<Float>, ldx: Int, n: Int, y: UnsafeMutablePointer<Float>,
                 ldy: Int, accumulate: Bool, inputGradientFollows: Bool, _ ctx: Context,
                 prepare: () -> Void, dense: () -> Void) {
        inputGradientValuesFresh = false
        let sparse = {
            prepare()
            let w = self.sparseWeights(store)
            if inputGradientFollows, let byColumn = self.byColumn {
                SparseKernels.gatherValues(self.byRow, into: self.rowValues, byColumn, into: self.columnValues,
                                           weights: w, threads: ctx.threads)
            } else {
                SparseKernels.gatherValues(self.byRow, weights: w, into: self.rowValues, threads: ctx.threads)
            }
            SparseKernels.multiply(self.byRow, weights: self.rowValues, weightsInIndexOrder: true, x: x, ldx: ldx, n: n,
                                   y: y, ldy: ldy, accumulate: accumulate, isa: ctx.kernelISA, threads: ctx.threads)
        }
        run(.forward, n: n, ctx, dense: { prepare(); dense() }, sparse: sparse)
        inputGradientValuesFresh = inputGradientFollows && lastPaths[KernelPass.forward.rawValue] == .sparse
    }

    /// `dX = (W⊙M)ᵀ·dY` over `n` columns, dense (`dense()`) or sparse: over the transposed index
    /// where there is one, else by scattering over the forward index (with the values the
    /// forward pass gathered, else gathered now).
    func inputGradient(_ store: ParameterStore, dy: UnsafePointer<Float>, lddy: Int, n: Int,
                       dx: UnsafeMutablePointer<Float>, lddx: Int, _ ctx: Context, dense: () -> Void) {
        let sparse = {
            let index = self.byColumn ?? self.byRow, values = self.byColumn == nil ? self.rowValues : self.columnValues
            if !self.inputGradientValuesFresh {
                SparseKernels.gatherValues(index, weights: self.sparseWeights(store), into: values, threads: ctx.threads)
            }
            if index.orientation == .columns {
                SparseKernels.multiply(index, weights: values, weightsInIndexOrder: true, x: dy, ldx: lddy, n: n,
                                       y: dx, ldy: lddx, isa: ctx.kernelISA, threads: ctx.threads)
            } else {
                SparseKernels.scatterTransposed(index, values: values, dy: dy, lddy: lddy, n: n, dx: dx, lddx: lddx,
                                                isa: ctx.kernelISA, threads: ctx.threads)
            }
        }
        run(.inputGradient, n: n, ctx, dense: dense, sparse: sparse)
        inputGradientValuesFresh = false
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

/// The masked matmul of a layer when its passes may run sparse (see `maskedPasses`);
/// `transposedIndex` for wide products (1×1 convolutions, see `MaskedMatmul.byColumn`).
func maskedMatmul(_ existing: inout MaskedMatmul?, name: String, weight: ParameterRef, rows: Int, cols: Int,
                  transposedIndex: Bool, store: ParameterStore, _ ctx: Context) -> MaskedMatmul? {
    maskedPasses(&existing, store: store, weight: weight, ctx) {
        MaskedMatmul(name: name, weight: weight, rows: rows, cols: cols, transposedIndex: transposedIndex)
    }
}
