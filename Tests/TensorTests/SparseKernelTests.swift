import XCTest
import Tensor

/// Every sparse kernel variant this CPU has, against the naive Double reference: densities 0, one
/// entry, 1%, 50%, 100%, with empty rows and columns, batch sizes that are not a multiple of any
/// vector width, ld > n, one and two threads.
final class SparseKernelTests: XCTestCase {
    private var variants: [KernelISA] {
        let v = KernelISA.allCases.filter(\.isSupported)
        print("sparse kernel variants tested on this CPU: \(v.map(\.description).joined(separator: ", "))"
              + (KernelISA.avx512.isSupported ? "" : " (no AVX-512 here: that variant is not run)"))
        return v
    }

    /// A mask of `rows × cols` with the requested pattern; row 1 and column 2 forced empty
    /// when the matrix has them (except for the full mask).
    private func mask(rows: Int, cols: Int, pattern: String, rng: inout Xoshiro256) -> [Float] {
        var m = [Float](repeating: 0, count: rows * cols)
        switch pattern {
        case "empty": break
        case "single": m[Int(rng.next() % UInt64(rows * cols))] = 1
        case "full": m = [Float](repeating: 1, count: rows * cols)
        default:
            let p = pattern == "1%" ? 0.01 : 0.5
            for i in m.indices where rng.nextDouble() < p { m[i] = 1 }
            if rows > 2 { for c in 0..<cols { m[1 * cols + c] = 0 } }
            if cols > 3 { for r in 0..<rows { m[r * cols + 2] = 0 } }
        }
        return m
    }

    func testKernelsMatchNaiveReference() {
        var rng = Xoshiro256(seed: 11)
        let shapes = [(1, 1), (5, 3), (17, 29), (64, 40), (130, 150)]
        let batches = [1, 7, 8, 13, 33, 64, 100, 130, 257]
        var variantCounter = 0
        for isa in variants {
            for (rows, cols) in shapes {
                for pattern in ["empty", "single", "1%", "50%", "full"] {
                    let m = mask(rows: rows, cols: cols, pattern: pattern, rng: &rng)
                    let w = m.map { $0 * (rng.nextFloat() * 2 - 1) }
                    let forward = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
                    let transposed = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .columns)
                    // Default source blocks (one block at these sizes) and narrow ones (many blocks).
                    let width = [nil, 3, 16][variantCounter % 3]
                    variantCounter += 1
                    m.withUnsafeBufferPointer {
                        forward.rebuild(mask: $0.baseAddress!, blockWidth: width)
                        transposed.rebuild(mask: $0.baseAddress!, blockWidth: width)
                    }
                    XCTAssertEqual(forward.count, Int(m.reduce(0, +)))
                    XCTAssertEqual(transposed.count, forward.count)
                    for n in batches.shuffled(using: &rng).prefix(2) {
                        for threads in rows * cols > 1000 ? [1, 2] : [1] {
                            let tag = "\(isa) \(rows)×\(cols) \(pattern) n\(n) threads \(threads) blocks \(forward.blocks)"
                            check(forward, w: w, inRows: cols, n: n, isa: isa, threads: threads, tag: "forward " + tag, rng: &rng)
                            check(transposed, w: w, inRows: rows, n: n, isa: isa, threads: threads, tag: "input gradient " + tag, rng: &rng)
                            checkScatter(forward, w: w, n: n, isa: isa, threads: threads, tag: "scattered input gradient " + tag, rng: &rng)
                            checkSampled(forward, inRows: cols, n: n, isa: isa, threads: threads, tag: tag, rng: &rng)
                        }
                    }
                }
            }
        }
    }

    /// n beyond `columnChunk` and `weightGradientColumnChunk` (a 1×1 convolution's images ×
    /// pixels) runs in column chunks.
    func testWideProductsRunInColumnChunks() {
        var rng = Xoshiro256(seed: 21)
        let n = 2 * max(SparseKernels.columnChunk, SparseKernels.weightGradientColumnChunk) + 77
        for isa in variants {
            let m = mask(rows: 9, cols: 14, pattern: "50%", rng: &rng)
            let w = m.map { $0 * (rng.nextFloat() * 2 - 1) }
            let forward = SparseIndex(weightRows: 9, weightColumns: 14, orientation: .rows)
            let transposed = SparseIndex(weightRows: 9, weightColumns: 14, orientation: .columns)
            m.withUnsafeBufferPointer { forward.rebuild(mask: $0.baseAddress!); transposed.rebuild(mask: $0.baseAddress!) }
            check(forward, w: w, inRows: 14, n: n, isa: isa, threads: 2, tag: "wide forward \(isa)", rng: &rng)
            check(transposed, w: w, inRows: 9, n: n, isa: isa, threads: 2, tag: "wide input gradient \(isa)", rng: &rng)
            checkScatter(forward, w: w, n: n, isa: isa, threads: 2, tag: "wide scattered input gradient \(isa)", rng: &rng)
            checkSampled(forward, inRows: 14, n: n, isa: isa, threads: 2, tag: "wide \(isa)", rng: &rng)
        }
    }

    /// Padded row copies against the rule, every variant: leads before, inside and past the
    /// row, copies longer than the row (cut at `width`), empty copies; nothing outside the rows'
    /// `width` floats written.
    func testPadRowsFollowTheRule() {
        var rng = Xoshiro256(seed: 31)
        for isa in variants {
            for _ in 0..<300 {
                let rows = Int(rng.next() % 5), width = Int(rng.next() % 70) + 1
                let count = Int(rng.next() % 40), lead = Int(rng.next() % UInt64(width + 3))
                let srcStride = count + Int(rng.next() % 4), dstStride = width + Int(rng.next() % 4)
                let src = (0..<(max(1, rows * srcStride))).map { _ in rng.nextFloat() + 1 }
                var dst = [Float](repeating: -7, count: max(1, rows * dstStride + 1))
                src.withUnsafeBufferPointer { s in
                    dst.withUnsafeMutableBufferPointer { d in
                        padRows(s.baseAddress!, stride: srcStride, count: count, into: d.baseAddress!, stride: dstStride,
                                lead: lead, width: width, rows: rows, isa: isa)
                    }
                }
                for (i, v) in dst.enumerated() {
                    let r = i / dstStride, j = i % dstStride
                    let expected: Float = r >= rows || j >= width ? -7
                        : j >= lead && j - lead < count ? src[r * srcStride + j - lead] : 0
                    XCTAssertEqual(v, expected, "\(isa) rows \(rows) width \(width) count \(count) lead \(lead) at \(r), \(j)")
                    if v != expected { return }
                }
            }
        }
    }

    /// `multiply` (overwrite and accumulate, ld > n) against the reference and, for the forward
    /// index, against a dense product with the masked weight.
    private func check(_ index: SparseIndex, w: [Float], inRows: Int, n: Int, isa: KernelISA, threads: Int,
                       tag: String, rng: inout Xoshiro256) {
        let ldx = n + 3, ldy = n + 5
        let x = (0..<(inRows * ldx)).map { _ in rng.nextFloat() * 2 - 1 }
        for accumulate in [false, true] {
            let y0 = (0..<(index.rows * ldy)).map { _ in rng.nextFloat() }
            var fast = y0, slow = y0
            fast.withUnsafeMutableBufferPointer { y in
                SparseKernels.multiply(index, weights: w, x: x, ldx: ldx, n: n, y: y.baseAddress!, ldy: ldy,
                                       accumulate: accumulate, isa: isa, threads: threads)
            }
            slow.withUnsafeMutableBufferPointer { y in
                SparseKernels.multiplyReference(index, weights: w, x: x, ldx: ldx, n: n, y: y.baseAddress!, ldy: ldy,
                                                accumulate: accumulate)
            }
            for r in 0..<index.rows {
                for b in 0..<ldy {
                    let i = r * ldy + b
                    if b >= n {
                        XCTAssertEqual(fast[i], y0[i], "\(tag): wrote past n at row \(r) column \(b)")
                    } else {
                        XCTAssertEqual(fast[i], slow[i], accuracy: 1e-5 * (1 + abs(slow[i])), "\(tag) acc \(accumulate) at \(r),\(b)")
                    }
                }
            }
        }
        if index.orientation == .rows {
            // The dense masked product: the index is the mask, nothing more or less.
            var dense = [Float](repeating: 0, count: index.rows * n)
            let xc = (0..<inRows).flatMap { r in x[(r * ldx)..<(r * ldx + n)] }
            dense.withUnsafeMutableBufferPointer { d in
                gemmReference(.none, .none, m: index.rows, n: n, k: inRows, a: w, lda: inRows, b: xc, ldb: n,
                              c: d.baseAddress!, ldc: n)
            }
            var fast = [Float](repeating: .nan, count: index.rows * n)
            fast.withUnsafeMutableBufferPointer { y in
                SparseKernels.multiply(index, weights: w, x: x, ldx: ldx, n: n, y: y.baseAddress!, ldy: n, isa: isa, threads: threads)
            }
            for i in fast.indices { XCTAssertEqual(fast[i], dense[i], accuracy: 1e-5 * (1 + abs(dense[i])), "\(tag) dense at \(i)") }
        }
    }

    /// `scatterTransposed` over a forward index against the dense product `dX = Wᵀ·dY` with the
    /// masked weight; dx starts as garbage (it is overwritten) and columns past n stay untouched.
    private func checkScatter(_ index: SparseIndex, w: [Float], n: Int, isa: KernelISA, threads: Int,
                              tag: String, rng: inout Xoshiro256) {
        let rows = index.rows, cols = index.weightColumns, lddy = n + 2, lddx = n + 3
        let dy = (0..<(rows * lddy)).map { _ in rng.nextFloat() * 2 - 1 }
        let values = (0..<index.count).map { w[Int(index.weightOffset[$0])] }
        let x0 = (0..<(cols * lddx)).map { _ in rng.nextFloat() + 7 }
        var dx = x0
        dx.withUnsafeMutableBufferPointer { d in
            SparseKernels.scatterTransposed(index, values: values, dy: dy, lddy: lddy, n: n, dx: d.baseAddress!, lddx: lddx,
                                            isa: isa, threads: threads)
        }
        var dense = [Float](repeating: 0, count: cols * n)
        let dyc = (0..<rows).flatMap { r in dy[(r * lddy)..<(r * lddy + n)] }
        dense.withUnsafeMutableBufferPointer { d in
            gemmReference(.transposed, .none, m: cols, n: n, k: rows, a: w, lda: cols, b: dyc, ldb: n, c: d.baseAddress!, ldc: n)
        }
        for c in 0..<cols {
            for b in 0..<lddx {
                let i = c * lddx + b
                if b >= n {
                    XCTAssertEqual(dx[i], x0[i], "\(tag): wrote past n at row \(c) column \(b)")
                } else {
                    XCTAssertEqual(dx[i], dense[c * n + b], accuracy: 1e-5 * (1 + abs(dense[c * n + b])), "\(tag) at \(c),\(b)")
                }
            }
        }
    }

    /// `sampledProduct` into a dense gradient (at the weight offsets) and packed (index order).
    private func checkSampled(_ index: SparseIndex, inRows: Int, n: Int, isa: KernelISA, threads: Int,
                              tag: String, rng: inout Xoshiro256) {
        let lddy = n + 1, ldx = n + 2
        let dy = (0..<(index.rows * lddy)).map { _ in rng.nextFloat() * 2 - 1 }
        let x = (0..<(inRows * ldx)).map { _ in rng.nextFloat() * 2 - 1 }
        let size = index.weightRows * index.weightColumns
        let g0 = (0..<size).map { _ in rng.nextFloat() }
        var fast = g0, slow = g0
        fast.withUnsafeMutableBufferPointer { g in
            SparseKernels.sampledProduct(index, dy: dy, lddy: lddy, x: x, ldx: ldx, n: n, into: .dense(g.baseAddress!),
                                         isa: isa, threads: threads)
        }
        slow.withUnsafeMutableBufferPointer { g in
            SparseKernels.sampledProductReference(index, dy: dy, lddy: lddy, x: x, ldx: ldx, n: n, into: .dense(g.baseAddress!))
        }
        var active = Set<Int>()
        for k in 0..<index.count { active.insert(Int(index.weightOffset[k])) }
        for i in 0..<size {
            if active.contains(i) {
                XCTAssertEqual(fast[i], slow[i], accuracy: 1e-5 * (1 + abs(slow[i])), "weight gradient \(tag) at \(i)")
            } else {
                XCTAssertEqual(fast[i], g0[i], "weight gradient \(tag): inactive entry \(i) written")
            }
        }
        var packed = [Float](repeating: 0, count: max(index.count, 1))
        packed.withUnsafeMutableBufferPointer { p in
            SparseKernels.sampledProduct(index, dy: dy, lddy: lddy, x: x, ldx: ldx, n: n, into: .packed(p.baseAddress!),
                                         isa: isa, threads: threads)
        }
        // Packed = the active entries in row-major order (the reducer's packed order).
        let activeInOrder = active.sorted()
        for (j, i) in activeInOrder.enumerated() {
            XCTAssertEqual(packed[j], slow[i] - g0[i], accuracy: 1e-5 * (1 + abs(slow[i])), "packed \(tag) at \(j)")
        }
    }

    /// Entries of index row r over all source blocks, in block order.
    private func entries(_ index: SparseIndex, _ r: Int) -> [Int] {
        (0..<index.blocks).flatMap { b in Int(index.rowStart[b * index.rows + r])..<Int(index.rowStart[b * index.rows + r + 1]) }
    }

    func testColumnIndexIsTheTransposeOfTheRowIndex() {
        var rng = Xoshiro256(seed: 3)
        let rows = 23, cols = 41
        let m = (0..<(rows * cols)).map { _ in Float(rng.nextDouble() < 0.2 ? 1 : 0) }
        for width in [64, 4] {
            let byRow = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
            let byColumn = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .columns)
            m.withUnsafeBufferPointer { byRow.rebuild(mask: $0.baseAddress!, blockWidth: width); byColumn.rebuild(mask: $0.baseAddress!, blockWidth: width) }
            XCTAssertEqual(byRow.blocks, width == 64 ? 1 : 11)
            var fromRows: [(Int32, Int32)] = [], fromColumns: [(Int32, Int32)] = []
            var rowMajor: [Int32: Int32] = [:]
            for o in 0..<rows {
                var previous: Int32 = -1
                for k in entries(byRow, o) {
                    XCTAssertGreaterThan(byRow.source[k], previous, "columns ascending within a row")
                    previous = byRow.source[k]
                    XCTAssertEqual(byRow.weightOffset[k], Int32(o * cols) + byRow.source[k])
                    fromRows.append((Int32(o), byRow.source[k]))
                    rowMajor[byRow.weightOffset[k]] = byRow.rowMajorPosition[k]
                }
            }
            // rowMajorPosition ranks the active entries in row-major order.
            XCTAssertEqual(rowMajor.keys.sorted().map { rowMajor[$0]! }, (0..<Int32(byRow.count)).map { $0 })
            for c in 0..<cols {
                var previous: Int32 = -1
                for k in entries(byColumn, c) {
                    XCTAssertGreaterThan(byColumn.source[k], previous, "rows ascending within a column")
                    previous = byColumn.source[k]
                    XCTAssertEqual(byColumn.weightOffset[k], byColumn.source[k] * Int32(cols) + Int32(c))
                    XCTAssertEqual(byColumn.rowMajorPosition[k], rowMajor[byColumn.weightOffset[k]])
                    fromColumns.append((byColumn.source[k], Int32(c)))
                }
            }
            XCTAssertEqual(fromRows.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { "\($0)" },
                           fromColumns.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { "\($0)" })
            // Values gathered in index order, for either index, are the weights at their offsets.
            let w = (0..<(rows * cols)).map { Float($0) * 0.5 }
            for index in [byRow, byColumn] {
                var values = [Float](repeating: -1, count: index.count)
                values.withUnsafeMutableBufferPointer { SparseKernels.gatherValues(index, weights: w, into: $0.baseAddress!, threads: 2) }
                XCTAssertEqual(values, (0..<index.count).map { w[Int(index.weightOffset[$0])] })
            }
            // Both at once (one read of the weight) gives the same two arrays.
            var rowValues = [Float](repeating: -1, count: byRow.count), columnValues = rowValues
            rowValues.withUnsafeMutableBufferPointer { r in
                columnValues.withUnsafeMutableBufferPointer { c in
                    SparseKernels.gatherValues(byRow, into: r.baseAddress!, byColumn, into: c.baseAddress!, weights: w, threads: 2)
                }
            }
            XCTAssertEqual(rowValues, (0..<byRow.count).map { w[Int(byRow.weightOffset[$0])] })
            XCTAssertEqual(columnValues, (0..<byColumn.count).map { w[Int(byColumn.weightOffset[$0])] })
            // Rebuilding after a change reuses the index and follows the new mask.
            var m2 = m
            for i in m2.indices where i % 3 == 0 { m2[i] = 1 - m2[i] }
            m2.withUnsafeBufferPointer { byRow.rebuild(mask: $0.baseAddress!, blockWidth: width); byColumn.rebuild(mask: $0.baseAddress!, blockWidth: width) }
            XCTAssertEqual(byRow.count, Int(m2.reduce(0, +)))
            XCTAssertEqual(byColumn.rowStart[byColumn.blocks * cols], Int32(byRow.count))
            XCTAssertEqual((0..<rows).reduce(0) { $0 + byRow.entries(inRow: $1) }, byRow.count)
            let split = byRow.balancedRowSplit(parts: 2)
            XCTAssertEqual(split.first, 0)
            XCTAssertEqual(split.last, rows)
        }
    }

    func testBlockWidthFollowsTheDensity() {
        // 32 with ≥ 9 entries per row and block, else the narrowest power of two from 64 with ≥ 12.
        XCTAssertEqual(SparseIndex.blockWidth(sources: 4096, rows: 4096, entries: 4096 * 4096 / 10), 128)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 4096, rows: 4096, entries: 4096 * 4096 / 20), 256)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 4096, rows: 4096, entries: 4096 * 4096 / 100), 2048)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 1024, rows: 256, entries: 1024 * 256 / 4), 64)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 512, rows: 128, entries: 512 * 128 / 2), 32)
        XCTAssertEqual(SparseIndex.sampledProductWidth(sources: 512, rows: 128, entries: 512 * 128 / 2), 64)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 300, rows: 10, entries: 30), 300)
        XCTAssertEqual(SparseIndex.blockWidth(sources: 4096, rows: 4096, entries: 0), 4096)
    }
}
