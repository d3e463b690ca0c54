/// Selection of the `k` smallest keys in O(n) on average (quickselect), with ties broken by the
/// lower index, so the chosen set is deterministic and has exactly `k` members. Pruning (drop the
/// smallest |w|) and growth (take the largest |g|, i.e. the smallest −|g|) both use it.

/// Indices (ascending) of the `k` smallest entries of `keys`; among equal keys the lower index
/// is chosen first. `k` is clamped to `0...keys.count`. Keys must not be NaN.
public func smallestIndices(_ keys: UnsafeBufferPointer<Float>, count k: Int) -> [Int32] {
    let n = keys.count
    guard k > 0 else { return [] }
    guard k < n else { return (0..<n).map { Int32(truncatingIfNeeded: $0) } }
    var scratch = Array(keys)
    let threshold = scratch.withUnsafeMutableBufferPointer { nthSmallest($0, k - 1) }
    var below = 0
    for i in 0..<n where keys[i] < threshold { below &+= 1 }
    var equalWanted = k - below
    var out: [Int32] = []
    out.reserveCapacity(k)
    for i in 0..<n {
        let v = keys[i]
        if v < threshold {
            out.append(Int32(truncatingIfNeeded: i))
        } else if v == threshold && equalWanted > 0 {
            out.append(Int32(truncatingIfNeeded: i))
            equalWanted -= 1
        }
    }
    return out
}

/// The value that would sit at position `k` (0-based) if `p` were sorted ascending; reorders `p`.
/// Hoare partition around a median-of-three pivot.
func nthSmallest(_ p: UnsafeMutableBufferPointer<Float>, _ k: Int) -> Float {
    precondition(k >= 0 && k < p.count, "selection rank \(k) outside 0..<\(p.count)")
    var lo = 0, hi = p.count - 1
    while lo < hi {
        let a = p[lo], b = p[lo + (hi - lo) / 2], c = p[hi]
        let pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b))
        var i = lo, j = hi
        while i <= j {
            while p[i] < pivot { i &+= 1 }
            while p[j] > pivot { j &-= 1 }
            if i <= j {
                p.swapAt(i, j)
                i &+= 1
                j &-= 1
            }
        }
        // Now p[lo...j] ≤ pivot, p[i...hi] ≥ pivot and everything strictly between equals it.
        if k <= j {
            hi = j
        } else if k >= i {
            lo = i
        } else {
            return p[k]
        }
    }
    return p[lo]
}
