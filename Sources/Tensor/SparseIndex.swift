/// Compressed row index of a masked weight, the input of the sparse kernels.
///
/// For a linear weight W[out × in] with mask M:
/// - `.rows` (forward, weight gradient): index row o lists the active columns c, `source = c`;
/// - `.columns` (input gradient): index row c lists the active rows o, `source = o`;
/// and every entry k has `weightOffset[k] = o·in + c` and `rowMajorPosition[k]` = its rank among
/// the active entries in row-major order (the order of the reducer's packed gradient).
///
/// Entries are grouped in **source blocks** of `blockWidth` sources (so the activation rows one
/// block reads stay in L2 while every index row runs over it): block b owns entries
/// `rowStart[b·rows + r] ..< rowStart[b·rows + r + 1]` of row r, sources ascending within it.
/// Rebuilt in place after a mask change (a counting sort); storage grows only when the number
/// of entries exceeds what it has held before.
public final class SparseIndex {
    public enum Orientation: Sendable { case rows, columns }

    public let orientation: Orientation
    /// Rows of the index (outputs for `.rows`, inputs for `.columns`).
    public let rows: Int
    /// Rows and columns of the dense weight it indexes.
    public let weightRows: Int, weightColumns: Int
    /// Entries (active weights).
    public private(set) var count = 0
    /// Sources per block and number of blocks (chosen from the density at each rebuild).
    public private(set) var blockWidth = 1
    public private(set) var blocks = 1
    /// `blocks · rows + 1` starts (see the type's description).
    public private(set) var rowStart: UnsafeMutablePointer<Int32>
    public private(set) var source: UnsafeMutablePointer<Int32>
    public private(set) var weightOffset: UnsafeMutablePointer<Int32>
    public private(set) var rowMajorPosition: UnsafeMutablePointer<Int32>
    /// The inverse view, by row-major rank j: the dense offset of the j-th active weight and its
    /// entry k in this index. Gathering values in index order walks these, reading the dense
    /// weight in ascending order (each cache line once) and writing within the small value array.
    public private(set) var rowMajorOffset: UnsafeMutablePointer<Int32>
    public private(set) var entryOfRowMajor: UnsafeMutablePointer<Int32>
    /// Entries of rows `0 ..< r` over all blocks, `rows + 1` values (splitting work by rows).
    private var rowPrefix: UnsafeMutablePointer<Int>
    private var capacity = 0, startCapacity = 0
    /// Sources of the index (columns of W for `.rows`, rows of W for `.columns`).
    /// Columns of the index's rows: inputs for `.rows`, outputs for `.columns`.
    var sources: Int { orientation == .rows ? weightColumns : weightRows }

    public init(weightRows: Int, weightColumns: Int, orientation: Orientation) {
        precondition(weightRows * weightColumns <= Int(Int32.max), "a sparse index holds at most 2^31 weights")
        self.weightRows = weightRows
        self.weightColumns = weightColumns
        self.orientation = orientation
        rows = orientation == .rows ? weightRows : weightColumns
        startCapacity = rows + 1
        rowStart = .allocate(capacity: startCapacity)
        rowStart.initialize(repeating: 0, count: startCapacity)
        rowPrefix = .allocate(capacity: rows + 1)
        rowPrefix.initialize(repeating: 0, count: rows + 1)
        source = .allocate(capacity: 1)
        weightOffset = .allocate(capacity: 1)
        rowMajorPosition = .allocate(capacity: 1)
        rowMajorOffset = .allocate(capacity: 1)
        entryOfRowMajor = .allocate(capacity: 1)
    }

    deinit {
        rowStart.deallocate(); rowPrefix.deallocate(); source.deallocate(); weightOffset.deallocate()
        rowMajorPosition.deallocate(); rowMajorOffset.deallocate(); entryOfRowMajor.deallocate()
    }

    /// Active fraction of the weight.
    public var density: Double { Double(count) / Double(max(1, weightRows * weightColumns)) }

    /// Source-block width for `entries` active weights: 32 sources where a row still has 9
    /// entries per block on average (density ≥ 0.28), else the narrowest power of two from 64
    /// sources (all of them when fewer) with at least 12. A block's activation rows are what the
    /// kernels re-read from cache while its rows run; each block costs every row one load and
    /// store of its outputs. `bench kernels --threads 1` (forward ms by width; 2 threads are too
    /// noisy on the 2-vCPU hosts): 256 × 1024 at n = 6272, density 0.24, 16.2 at 64 against 18.8
    /// at 128 and 20.2 at 256 (and 15.6–19.5 at 32); 1024 × 256 at 0.24 16.8 at 64 against 22.7 /
    /// 25.1 (16.7 at 32), at 0.12 9.3 at 128 against 12.2 at 64 and 12.8 at 256; 4096 × 4096 at
    /// batch 128, 0.1 9.5 at 128 against 10.4–10.6 at 256 and 10.6 at 64, 0.05 5.0 at 256 against
    /// 6.6 at 128, 0.01 1.34 at 2048 against 1.45 at 1024. At 32: ResNet-50's 1×1 layers at
    /// n = 25088, 128 × 512 at 0.48 30.9 against 40.0–40.2 at 64, 512 × 128 30.3–30.4 against
    /// 38.8–38.9, 128 × 256 at 0.57 19.6 against 25.4, 256 × 512 at 0.29 37.2–37.6 against 42.0.
    /// The weight gradient takes consecutive blocks together (`sampledProductBlocks`): no slower.
    public static func blockWidth(sources: Int, rows: Int, entries: Int) -> Int {
        let perSource = Double(entries) / Double(max(sources, 1)) / Double(max(rows, 1))
        if 32 < sources && 32 * perSource >= 9 { return 32 }
        return sampledProductWidth(sources: sources, rows: rows, entries: entries)
    }

    /// Sources the weight gradient (`stsp_sddmm`) takes together, in consecutive blocks: the
    /// narrowest power of two from 64 sources (all of them when fewer) with at least 12 entries
    /// per row on average. Its products run eight entries at a time.
    public static func sampledProductWidth(sources: Int, rows: Int, entries: Int) -> Int {
        guard entries > 0 else { return max(sources, 1) }
        let perSource = Double(entries) / Double(max(sources, 1)) / Double(max(rows, 1))
        var width = 64
        while width < sources && Double(width) * perSource < 12 { width *= 2 }
        return min(width, max(sources, 1))
    }

    /// Consecutive blocks the weight gradient takes together (see `sampledProductWidth`).
    public var sampledProductBlocks: Int {
        max(1, Self.sampledProductWidth(sources: sources, rows: rows, entries: count) / max(blockWidth, 1))
    }

    /// Rebuilds the index from a 0/1 mask (row-major, `weightRows × weightColumns`; non-zero =
    /// active) with source blocks of `blockWidth` (`sources` or more: one block; default: the
    /// width for its density). A row index of one block (a convolution's) is built from the
    /// mask's active positions by `rebuildRows(activePositions:threads:)`.
    public func rebuild(mask: UnsafePointer<Float>, blockWidth requested: Int? = nil, threads: Int = 1) {
        // With the width given, the counting pass below also counts the entries.
        let counted = requested == nil ? Self.countActive(mask, weightRows &* weightColumns) : nil
        let width = requested.map { min(max($0, 1), max(sources, 1)) }
            ?? Self.blockWidth(sources: sources, rows: rows, entries: counted!)
        let m = weightRows, n = weightColumns
        if width >= sources && orientation == .rows {
            nonZeroPositions(of: mask, count: m &* n).withUnsafeBufferPointer { rebuildRows(activePositions: $0, threads: threads) }
            return
        }
        blockWidth = width
        blocks = max(1, (sources + width - 1) / width)
        let buckets = blocks &* rows
        if buckets + 1 > startCapacity {
            rowStart.deallocate()
            startCapacity = buckets + 1
            rowStart = .allocate(capacity: startCapacity)
        }
        // Counting sort of the row-major walk into buckets (block, row); rowStart[bucket + 1]
        // counts first, then rowStart[bucket] serves as the fill cursor and is shifted back.
        let byRows = orientation == .rows, oneBlock = blocks == 1  // no division per entry
        rowStart.update(repeating: 0, count: buckets + 1)
        for o in 0..<m {
            let row = mask + o &* n
            Self.forEachActive(row, n) { c in
                let (r, s) = byRows ? (o, c) : (c, o)
                rowStart[(oneBlock ? 0 : s / width) &* rows &+ r &+ 1] &+= 1
            }
        }
        for b in 0..<buckets { rowStart[b &+ 1] &+= rowStart[b] }
        let total = Int(rowStart[buckets])
        assert(counted == nil || counted == total)
        reserve(total)
        count = total
        var j: Int32 = 0
        for o in 0..<m {
            let row = mask + o &* n
            Self.forEachActive(row, n) { c in
                let (r, s) = byRows ? (o, c) : (c, o)
                let bucket = (oneBlock ? 0 : s / width) &* rows &+ r
                let k = Int(rowStart[bucket])
                source[k] = Int32(truncatingIfNeeded: s)
                weightOffset[k] = Int32(truncatingIfNeeded: o &* n &+ c)
                rowMajorPosition[k] = j
                rowMajorOffset[Int(j)] = Int32(truncatingIfNeeded: o &* n &+ c)
                entryOfRowMajor[Int(j)] = Int32(truncatingIfNeeded: k)
                rowStart[bucket] &+= 1
                j &+= 1
            }
        }
        var previous: Int32 = 0
        for b in 0..<buckets {
            let end = rowStart[b]
            rowStart[b] = previous
            previous = end
        }
        rowStart[buckets] = Int32(truncatingIfNeeded: total)
        rowPrefix[0] = 0
        for r in 0..<rows {
            var entries = 0
            for b in 0..<blocks { entries &+= Int(rowStart[b &* rows &+ r &+ 1] &- rowStart[b &* rows &+ r]) }
            rowPrefix[r &+ 1] = rowPrefix[r] &+ entries
        }
    }

    /// Rebuilds a one-block row index (`.rows`, every source in one block, as a convolution's)
    /// from the weight's active positions — row-major offsets, ascending — in time proportional
    /// to their number: row starts by binary search, entries filled by `threads` workers.
    public func rebuildRows(activePositions positions: UnsafeBufferPointer<Int32>, threads: Int = 1) {
        precondition(orientation == .rows, "rebuildRows(activePositions:) builds a row index")
        let m = weightRows, n = weightColumns, total = positions.count
        blockWidth = max(sources, 1)
        blocks = 1
        if m + 1 > startCapacity {
            rowStart.deallocate()
            startCapacity = m + 1
            rowStart = .allocate(capacity: startCapacity)
        }
        reserve(total)
        count = total
        for o in 0...m {
            // First position at or past row o's start.
            let target = Int32(truncatingIfNeeded: o &* n)
            var lo = o == 0 ? 0 : Int(rowStart[o &- 1]), hi = total
            while lo < hi {
                let mid = (lo &+ hi) / 2
                if positions[mid] < target { lo = mid &+ 1 } else { hi = mid }
            }
            rowStart[o] = Int32(truncatingIfNeeded: lo)
            rowPrefix[o] = lo
        }
        guard let first = positions.baseAddress, total > 0 else { return }
        precondition(Int(positions[total - 1]) < m &* n, "an active position lies outside the weight")
        let parts = total >= 1 << 16 ? max(1, threads) : 1
        let bounds = balancedRowSplit(parts: parts)
        let starts = SendablePointer(rowStart), from = SendablePointer(UnsafeMutablePointer(mutating: first))
        let out = (SendablePointer(source), SendablePointer(weightOffset), SendablePointer(rowMajorPosition),
                   SendablePointer(rowMajorOffset), SendablePointer(entryOfRowMajor))
        parallelChunks(parts, chunks: parts) { range in
            for p in range {
                for o in bounds[p]..<bounds[p &+ 1] {
                    let base = Int32(truncatingIfNeeded: o &* n)
                    for k in Int(starts.pointer[o])..<Int(starts.pointer[o &+ 1]) {
                        let offset = from.pointer[k], entry = Int32(truncatingIfNeeded: k)
                        out.0.pointer[k] = offset &- base
                        out.1.pointer[k] = offset
                        out.2.pointer[k] = entry
                        out.3.pointer[k] = offset
                        out.4.pointer[k] = entry
                    }
                }
            }
        }
    }

    /// Calls `body(i)` for each non-zero of `mask[0 ..< count]` in order, eight values at a time.
    @inline(__always)
    static func forEachActive(_ mask: UnsafePointer<Float>, _ count: Int, _ body: (Int) -> Void) {
        let lane = SIMD8<Int32>(1, 2, 4, 8, 16, 32, 64, 128)
        var i = 0
        while i &+ 8 <= count {
            // The lanes' non-zero bits in one vector compare, then their set bits.
            let v = UnsafeRawPointer(mask + i).loadUnaligned(as: SIMD8<Float>.self)
            var bits = Int(SIMD8<Int32>(repeating: 0).replacing(with: lane, where: v .!= 0).wrappedSum())
            while bits != 0 {
                body(i &+ bits.trailingZeroBitCount)
                bits &= bits &- 1
            }
            i &+= 8
        }
        while i < count { if mask[i] != 0 { body(i) }; i &+= 1 }
    }

    /// Non-zeros among `count` mask values, eight at a time.
    static func countActive(_ mask: UnsafePointer<Float>, _ count: Int) -> Int {
        var total = 0, i = 0
        while i &+ 8 <= count {
            let v = UnsafeRawPointer(mask + i).loadUnaligned(as: SIMD8<Float>.self)
            total &+= Int(SIMD8<Int32>(repeating: 0).replacing(with: 1, where: v .!= 0).wrappedSum())
            i &+= 8
        }
        while i < count { if mask[i] != 0 { total &+= 1 }; i &+= 1 }
        return total
    }

    private func reserve(_ entries: Int) {
        guard entries > capacity else { return }
        source.deallocate(); weightOffset.deallocate(); rowMajorPosition.deallocate()
        rowMajorOffset.deallocate(); entryOfRowMajor.deallocate()
        capacity = max(entries, capacity * 5 / 4)
        source = .allocate(capacity: capacity)
        weightOffset = .allocate(capacity: capacity)
        rowMajorPosition = .allocate(capacity: capacity)
        rowMajorOffset = .allocate(capacity: capacity)
        entryOfRowMajor = .allocate(capacity: capacity)
    }

    /// Entries of row r over all blocks.
    public func entries(inRow r: Int) -> Int { rowPrefix[r + 1] - rowPrefix[r] }

    /// Row boundaries splitting the entries into `parts` runs of about equal size:
    /// `parts + 1` ascending row numbers from 0 to `rows`.
    public func balancedRowSplit(parts: Int) -> [Int] {
        var bounds = [0]
        for p in 1..<max(parts, 1) {
            let target = count * p / parts
            var lo = bounds.last!, hi = rows
            while lo < hi {
                let mid = (lo + hi) / 2
                if rowPrefix[mid] < target { lo = mid + 1 } else { hi = mid }
            }
            bounds.append(lo)
        }
        bounds.append(rows)
        return bounds
    }
}

/// Positions (ascending) of the non-zeros of `mask[0 ..< count]`: one counting pass and one
/// filling pass, eight values per compare.
public func nonZeroPositions(of mask: UnsafePointer<Float>, count: Int) -> [Int32] {
    let total = SparseIndex.countActive(mask, count)
    return [Int32](unsafeUninitializedCapacity: total) { buffer, initialized in
        var j = 0
        SparseIndex.forEachActive(mask, count) { i in
            buffer[j] = Int32(truncatingIfNeeded: i)
            j &+= 1
        }
        initialized = j
    }
}
