/// Compressed row index of a masked weight, the input of the sparse kernels.
///
/// Row r of the index owns entries `k ∈ rowStart[r] ..< rowStart[r+1]`; entry k reads the
/// activation row `source[k]` and the weight `w[weightOffset[k]]`. For a linear weight
/// W[out × in] with mask M:
/// - `.rows` (forward, weight gradient): row o lists the active columns c ascending,
///   `source = c`, `weightOffset = o·in + c` — the order of the active entries in the buffer,
///   which is also the reducer's packed order;
/// - `.columns` (input gradient): row c lists the active rows o ascending, `source = o`,
///   `weightOffset = o·in + c` (a counting sort of the rows index).
/// Rebuilt in place after a mask change; storage grows only when the number of entries exceeds
/// what it has held before.
public final class SparseIndex {
    public enum Orientation: Sendable { case rows, columns }

    public let orientation: Orientation
    /// Rows of the index (outputs for `.rows`, inputs for `.columns`).
    public let rows: Int
    /// Rows and columns of the dense weight it indexes.
    public let weightRows: Int, weightColumns: Int
    /// Entries (active weights).
    public private(set) var count = 0
    public private(set) var rowStart: UnsafeMutablePointer<Int32>
    public private(set) var source: UnsafeMutablePointer<Int32>
    public private(set) var weightOffset: UnsafeMutablePointer<Int32>
    private var capacity = 0

    public init(weightRows: Int, weightColumns: Int, orientation: Orientation) {
        precondition(weightRows * weightColumns <= Int(Int32.max), "a sparse index holds at most 2^31 weights")
        self.weightRows = weightRows
        self.weightColumns = weightColumns
        self.orientation = orientation
        rows = orientation == .rows ? weightRows : weightColumns
        rowStart = .allocate(capacity: rows + 1)
        rowStart.initialize(repeating: 0, count: rows + 1)
        source = .allocate(capacity: 1)
        weightOffset = .allocate(capacity: 1)
    }

    deinit {
        rowStart.deallocate(); source.deallocate(); weightOffset.deallocate()
    }

    /// Active fraction of the weight.
    public var density: Double { Double(count) / Double(max(1, weightRows * weightColumns)) }

    /// Rebuilds the index from a 0/1 mask (row-major, `weightRows × weightColumns`; non-zero =
    /// active).
    public func rebuild(mask: UnsafePointer<Float>) {
        let m = weightRows, n = weightColumns
        var total = 0
        for i in 0..<(m &* n) where mask[i] != 0 { total &+= 1 }
        reserve(total)
        count = total
        switch orientation {
        case .rows:
            var k: Int32 = 0
            for o in 0..<m {
                rowStart[o] = k
                let row = mask + o &* n
                for c in 0..<n where row[c] != 0 {
                    source[Int(k)] = Int32(truncatingIfNeeded: c)
                    weightOffset[Int(k)] = Int32(truncatingIfNeeded: o &* n &+ c)
                    k &+= 1
                }
            }
            rowStart[m] = k
        case .columns:
            // Counting sort by column: count, prefix sums, then fill walking rows ascending.
            rowStart.update(repeating: 0, count: n + 1)
            for o in 0..<m {
                let row = mask + o &* n
                for c in 0..<n where row[c] != 0 { rowStart[c &+ 1] &+= 1 }
            }
            for c in 0..<n { rowStart[c &+ 1] &+= rowStart[c] }
            // rowStart[c] is used as the fill cursor, then restored.
            for o in 0..<m {
                let row = mask + o &* n
                for c in 0..<n where row[c] != 0 {
                    let k = Int(rowStart[c])
                    source[k] = Int32(truncatingIfNeeded: o)
                    weightOffset[k] = Int32(truncatingIfNeeded: o &* n &+ c)
                    rowStart[c] &+= 1
                }
            }
            var previous: Int32 = 0
            for c in 0..<n {
                let end = rowStart[c]
                rowStart[c] = previous
                previous = end
            }
            rowStart[n] = Int32(truncatingIfNeeded: total)
        }
    }

    private func reserve(_ entries: Int) {
        guard entries > capacity else { return }
        source.deallocate(); weightOffset.deallocate()
        capacity = max(entries, capacity * 5 / 4)
        source = .allocate(capacity: capacity)
        weightOffset = .allocate(capacity: capacity)
    }

    /// Row boundaries splitting the entries into `parts` runs of about equal size:
    /// `parts + 1` ascending row numbers from 0 to `rows`.
    public func balancedRowSplit(parts: Int) -> [Int] {
        var bounds = [0]
        for p in 1..<max(parts, 1) {
            let target = Int32(truncatingIfNeeded: count * p / parts)
            var lo = bounds.last!, hi = rows
            while lo < hi {
                let mid = (lo + hi) / 2
                if rowStart[mid] < target { lo = mid + 1 } else { hi = mid }
            }
            bounds.append(lo)
        }
        bounds.append(rows)
        return bounds
    }
}
