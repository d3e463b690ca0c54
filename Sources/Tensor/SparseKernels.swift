import CSparseKernels
import Dispatch
import Foundation

/// Where `sampledProduct` puts entry k's result.
public enum SampledOutput {
    /// Added into a dense `rows × columns` gradient at `weightOffset[k]`.
    case dense(UnsafeMutablePointer<Float>)
    /// Added into a packed gradient at `rowMajorPosition[k]` (the reducer's packed order).
    case packed(UnsafeMutablePointer<Float>)
}

/// The weights a sparse pass reads: a dense tensor (read at the index's weight offsets), or
/// packed — the active weights in row-major order, entry j at the index's row-major rank j.
public enum SparseWeights {
    case dense(UnsafePointer<Float>)
    case packed(UnsafePointer<Float>)

    /// The pointer and the offsets to read it at (nil: packed, read in rank order).
    func source(_ index: SparseIndex) -> (UnsafePointer<Float>, UnsafeMutablePointer<Int32>?) {
        switch self {
        case .dense(let w): return (w, index.rowMajorOffset)
        case .packed(let w): return (w, nil)
        }
    }
}

/// Sparse products of a masked weight with batch-innermost activations (`[features][n]`, row
/// stride `ld`), over a `SparseIndex`, one source block after the other. Threads own disjoint
/// rows of the index (split by entry count): no atomics, no per-thread copies.
public enum SparseKernels {
    /// Work (entries × batch) below which a product stays on one thread.
    static let parallelThreshold = 1 << 16
    /// Columns per chunk when `n` is larger (a 1×1 convolution's n = images × pixels): chunks
    /// run one after the other, so a chunk's slice of the activation rows stays in L2.
    public static let columnChunk = 256
    /// Columns per chunk of the weight gradient: each active weight's dot product ends per chunk
    /// in a horizontal sum and a write, so it runs over longer chunks (`bench kernels`, 256×1024
    /// at n = 6272, 3 alternating runs: density 0.1 dW 10.1–11.3 ms with 256 columns, 8.6–9.2
    /// with 1024; density 0.01 3.2–4.1 → 2.0–3.1 ms).
    public static let weightGradientColumnChunk = 1024

    /// `(first column, count)` of the chunks of `0 ..< n`.
    static func columnChunks(_ n: Int, chunk: Int = columnChunk) -> [(Int, Int)] {
        n <= 2 * chunk ? [(0, n)] : Swift.stride(from: 0, to: n, by: chunk).map { ($0, min(chunk, n - $0)) }
    }

    /// `y[r][b] (+)= Σ_{k ∈ row r} w(k) · x[source[k]][b]` for every row r of the index and
    /// `b < n`, where `w(k) = weights[weightOffset[k]]`, or `weights[k]` with
    /// `weightsInIndexOrder` (see `gatherValues`). With the `.rows` index this is `Y = (W⊙M)·X`
    /// (forward); with the `.columns` index, `dX = (W⊙M)ᵀ·dY` (input gradient).
    public static func multiply(
        _ index: SparseIndex, weights w: UnsafePointer<Float>, weightsInIndexOrder: Bool = false,
        x: UnsafePointer<Float>, ldx: Int,
        n: Int, y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool = false,
        isa: KernelISA = .best, threads: Int = 1
    ) {
        let rs = SendablePointer(index.rowStart), src = SendablePointer(index.source)
        let wo = weightsInIndexOrder ? nil : SendablePointer(index.weightOffset)
        let wp = SendablePointer(UnsafeMutablePointer(mutating: w))
        let xp = SendablePointer(UnsafeMutablePointer(mutating: x)), yp = SendablePointer(y)
        let isaCode = Int32(isa.rawValue), rows = index.rows, blocks = index.blocks
        let width = index.blockWidth, sources = index.sources
        let chunks = columnChunks(n)
        forEachRowRun(index, work: index.count &* n, threads: threads) { r0, r1 in
            for (c, (c0, cn)) in chunks.enumerated() {
                for b in 0..<blocks {
                    // The next call's activation rows: the next block's, or the next chunk's first.
                    let (nextBlock, nextChunk) = b + 1 < blocks ? (b + 1, c) : (0, c + 1)
                    let ahead = nextChunk < chunks.count
                        ? (xp.pointer + nextBlock * width * ldx + chunks[nextChunk].0, min(width, sources - nextBlock * width),
                           chunks[nextChunk].1)
                        : (nil, 0, 0)
                    stsp_spmm(isaCode, rs.pointer + b &* rows, src.pointer, wo?.pointer, wp.pointer, xp.pointer + c0, ldx,
                              Int32(cn), yp.pointer + c0, ldy, Int32(r0), Int32(r1), accumulate || b > 0 ? 1 : 0,
                              ahead.0, Int32(ahead.1), Int32(ahead.2))
                }
            }
        }
    }

    /// `dx[c][b] = Σ_{entries k = (r, c)} values[k] · dy[r][b]` for every source c of a `.rows`
    /// index and `b < n`: the input gradient `dX = (W⊙M)ᵀ·dY` from the forward index and its
    /// values in index order (see `gatherValues`), by scattering (`stsp_scatter`). Work items are
    /// (column chunk, source block) pairs, which own disjoint parts of dx; each zeroes its part,
    /// then scatters every row's entries of its block into it.
    public static func scatterTransposed(
        _ index: SparseIndex, values: UnsafePointer<Float>, dy: UnsafePointer<Float>, lddy: Int, n: Int,
        dx: UnsafeMutablePointer<Float>, lddx: Int, isa: KernelISA = .best, threads: Int = 1
    ) {
        precondition(index.orientation == .rows, "scatterTransposed runs over a forward (.rows) index")
        let rs = SendablePointer(index.rowStart), src = SendablePointer(index.source)
        let vp = SendablePointer(UnsafeMutablePointer(mutating: values))
        let dp = SendablePointer(UnsafeMutablePointer(mutating: dy)), xp = SendablePointer(dx)
        let isaCode = Int32(isa.rawValue), rows = index.rows, width = index.blockWidth, sources = index.weightColumns
        let items = columnChunks(n).flatMap { chunk in (0..<index.blocks).map { (chunk, $0) } }
        let workers = index.count &* n >= parallelThreshold ? min(threads, items.count) : 1
        parallelChunks(items.count, chunks: workers) { range in
            for i in range {
                let ((c0, cn), b) = items[i]
                for c in (b * width)..<min((b + 1) * width, sources) {
                    (xp.pointer + c * lddx + c0).update(repeating: 0, count: cn)
                }
                stsp_scatter(isaCode, rs.pointer + b &* rows, src.pointer, vp.pointer, dp.pointer + c0, lddy,
                             Int32(cn), xp.pointer + c0, lddx, Int32(rows))
            }
        }
    }

    /// `out(k) += Σ_b dy[r][b] · x[source[k]][b]` for every entry k (row r) of a `.rows` index:
    /// the weight gradient `dW = dY·Xᵀ` at the mask's positions only.
    public static func sampledProduct(
        _ index: SparseIndex, dy: UnsafePointer<Float>, lddy: Int, x: UnsafePointer<Float>, ldx: Int,
        n: Int, into output: SampledOutput, isa: KernelISA = .best, threads: Int = 1
    ) {
        let rs = SendablePointer(index.rowStart), src = SendablePointer(index.source)
        let dp = SendablePointer(UnsafeMutablePointer(mutating: dy)), xp = SendablePointer(UnsafeMutablePointer(mutating: x))
        let (out, positions): (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>)
        switch output {
        case .dense(let g): (out, positions) = (g, index.weightOffset)
        case .packed(let g): (out, positions) = (g, index.rowMajorPosition)
        }
        let op = SendablePointer(out), oo = SendablePointer(positions)
        let isaCode = Int32(isa.rawValue), rows = index.rows, blocks = index.blocks, group = index.sampledProductBlocks
        let chunks = columnChunks(n, chunk: weightGradientColumnChunk)
        forEachRowRun(index, work: index.count &* n, threads: threads) { r0, r1 in
            for (c0, cn) in chunks {
                for b in Swift.stride(from: 0, to: blocks, by: group) {
                    stsp_sddmm(isaCode, rs.pointer + b &* rows, rows, Int32(min(group, blocks - b)), src.pointer,
                               dp.pointer + c0, lddy, xp.pointer + c0, ldx, Int32(cn), op.pointer, oo.pointer,
                               Int32(r0), Int32(r1))
                }
            }
        }
    }

    /// `values[k] = w[weightOffset[k]]`: the weights in index order, once per pass instead of
    /// once per batch tile. Walks the active weights in row-major order (the dense weight read
    /// ascending, each cache line once) and writes each to its entry.
    public static func gatherValues(
        _ index: SparseIndex, weights w: UnsafePointer<Float>, into values: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        gatherValues(index, weights: .dense(w), into: values, threads: threads)
    }

    /// `gatherValues` from dense or packed weights (packed: `values[entry of rank j] = w[j]`).
    public static func gatherValues(
        _ index: SparseIndex, weights: SparseWeights, into values: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        let (w, offsets) = weights.source(index)
        let off = offsets.map { SendablePointer($0) }, entry = SendablePointer(index.entryOfRowMajor)
        let wp = SendablePointer(UnsafeMutablePointer(mutating: w)), vp = SendablePointer(values)
        parallelChunks(index.count, chunks: index.count >= parallelThreshold ? threads : 1) { r in
            stsp_gather(off?.pointer, wp.pointer, entry.pointer, vp.pointer, nil, nil, r.lowerBound, r.upperBound)
        }
    }

    /// `gatherValues` into two indices of the same mask at once (a weight's forward `.rows` index
    /// and its input-gradient `.columns` index): one read of the dense weight fills both.
    public static func gatherValues(
        _ first: SparseIndex, into firstValues: UnsafeMutablePointer<Float>,
        _ second: SparseIndex, into secondValues: UnsafeMutablePointer<Float>,
        weights w: UnsafePointer<Float>, threads: Int = 1
    ) {
        gatherValues(first, into: firstValues, second, into: secondValues, weights: .dense(w), threads: threads)
    }

    /// The two-index `gatherValues` from dense or packed weights.
    public static func gatherValues(
        _ first: SparseIndex, into firstValues: UnsafeMutablePointer<Float>,
        _ second: SparseIndex, into secondValues: UnsafeMutablePointer<Float>,
        weights: SparseWeights, threads: Int = 1
    ) {
        precondition(first.count == second.count, "the two indices describe different masks")
        let (w, offsets) = weights.source(first)
        let off = offsets.map { SendablePointer($0) }
        let e1 = SendablePointer(first.entryOfRowMajor), e2 = SendablePointer(second.entryOfRowMajor)
        let wp = SendablePointer(UnsafeMutablePointer(mutating: w))
        let v1 = SendablePointer(firstValues), v2 = SendablePointer(secondValues)
        parallelChunks(first.count, chunks: first.count >= parallelThreshold ? threads : 1) { r in
            stsp_gather(off?.pointer, wp.pointer, e1.pointer, v1.pointer, e2.pointer, v2.pointer, r.lowerBound, r.upperBound)
        }
    }

    private static func forEachRowRun(
        _ index: SparseIndex, work: Int, threads: Int, _ body: @Sendable (Int, Int) -> Void
    ) {
        guard threads > 1, work >= parallelThreshold, index.rows > 1 else {
            body(0, index.rows)
            return
        }
        let bounds = index.balancedRowSplit(parts: threads)
        DispatchQueue.concurrentPerform(iterations: threads) { t in body(bounds[t], bounds[t + 1]) }
    }

    /// Entries of row r, over all blocks.
    static func entries(_ index: SparseIndex, row r: Int) -> [Int] {
        (0..<index.blocks).flatMap { b in
            Int(index.rowStart[b * index.rows + r])..<Int(index.rowStart[b * index.rows + r + 1])
        }
    }

    /// Naive `multiply` in Double: the reference the kernels are tested against.
    public static func multiplyReference(
        _ index: SparseIndex, weights w: UnsafePointer<Float>, weightsInIndexOrder: Bool = false,
        x: UnsafePointer<Float>, ldx: Int,
        n: Int, y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool = false
    ) {
        for r in 0..<index.rows {
            let ks = entries(index, row: r)
            for b in 0..<n {
                var s = accumulate ? Double(y[r * ldy + b]) : 0
                for k in ks {
                    let v = weightsInIndexOrder ? w[k] : w[Int(index.weightOffset[k])]
                    s += Double(v) * Double(x[Int(index.source[k]) * ldx + b])
                }
                y[r * ldy + b] = Float(s)
            }
        }
    }

    /// Naive `sampledProduct` in Double.
    public static func sampledProductReference(
        _ index: SparseIndex, dy: UnsafePointer<Float>, lddy: Int, x: UnsafePointer<Float>, ldx: Int,
        n: Int, into output: SampledOutput
    ) {
        for r in 0..<index.rows {
            for k in entries(index, row: r) {
                var s = 0.0
                for b in 0..<n { s += Double(dy[r * lddy + b]) * Double(x[Int(index.source[k]) * ldx + b]) }
                switch output {
                case .dense(let g):
                    let p = Int(index.weightOffset[k])
                    g[p] = Float(Double(g[p]) + s)
                case .packed(let g):
                    let p = Int(index.rowMajorPosition[k])
                    g[p] = Float(Double(g[p]) + s)
                }
            }
        }
    }
}
