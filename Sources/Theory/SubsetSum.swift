import Foundation
import Tensor

/// Lemma 2.4 as an experiment: with `X_i ~ U[−1, 1]` and masks `M_i ~ Ber(p)`, how large must
/// the base set n be for a random target `z ~ U[−1, 1]` to be within ε of some subset sum of the
/// unmasked `X_i`, with probability ≥ 1 − δ? The lemma predicts `n ∝ 1 / log(1/(1 − p))`.
///
/// Each trial draws z and a sequence of (X_i, M_i) once; its success is monotone in n (a longer
/// prefix offers a superset of subsets), so the smallest working n per trial is found by
/// bisection and the required n is the (1 − δ)-quantile over trials. Subset sums are searched
/// exactly (meet in the middle) over at most `maxActive` unmasked values.
public struct SubsetSumPoint: Sendable, Codable {
    public var density: Double
    /// Required base size n (nil if not reached within `maxN`).
    public var n: Int?
    /// `n · log(1/(1 − p))` (nil for p = 1).
    public var nTimesLogFactor: Double?
    /// `n · p`: expected unmasked variables.
    public var nTimesDensity: Double?
}

public func subsetSumRequiredN(
    density p: Double, epsilon: Double, delta: Double, trials: Int, seed: UInt64,
    maxN: Int = 4096, maxActive: Int = 24
) throws -> SubsetSumPoint {
    guard p > 0, p <= 1 else { throw TheoryError("density must be in (0, 1]") }
    guard epsilon > 0, epsilon < 1 else { throw TheoryError("ε must be in (0, 1), got \(epsilon)") }
    guard delta > 0, delta < 1 else { throw TheoryError("δ must be in (0, 1), got \(delta)") }
    guard trials > 0 else { throw TheoryError("trials must be positive") }
    var needed: [Int] = []
    for t in 0..<trials {
        var rng = Xoshiro256(seed: seed ^ (UInt64(t) &* 0x9E37_79B9_7F4A_7C15))
        let z = rng.nextDouble() * 2 - 1
        var values: [Double] = []   // unmasked X_i in order, with their index i
        var positions: [Int] = []
        for i in 0..<maxN where values.count < maxActive {
            let x = rng.nextDouble() * 2 - 1
            if rng.nextDouble() < p { values.append(x); positions.append(i) }
        }
        // Smallest k (number of unmasked values used) that works; n = positions[k − 1] + 1.
        guard approximable(z, Array(values), epsilon) else { needed.append(Int.max); continue }
        var lo = 0, hi = values.count   // hi works, lo does not (0 values: only the empty sum)
        if abs(z) <= epsilon { needed.append(1); continue }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if approximable(z, Array(values[0..<mid]), epsilon) { hi = mid } else { lo = mid }
        }
        needed.append(positions[hi - 1] + 1)
    }
    needed.sort()
    let index = min(needed.count - 1, Int((Double(needed.count) * (1 - delta)).rounded(.up)) - 1)
    let n = needed[max(0, index)]
    guard n != Int.max else { return SubsetSumPoint(density: p, n: nil, nTimesLogFactor: nil, nTimesDensity: nil) }
    return SubsetSumPoint(
        density: p, n: n, nTimesLogFactor: p < 1 ? Double(n) * log(1 / (1 - p)) : nil,
        nTimesDensity: Double(n) * p)
}

/// Whether some subset of `values` sums to within ε of z (meet in the middle, exact).
func approximable(_ z: Double, _ values: [Double], _ epsilon: Double) -> Bool {
    let half = values.count / 2
    let left = subsetSums(Array(values[0..<half])).sorted()
    for s in subsetSums(Array(values[half...])) {
        let target = z - s
        // First left sum ≥ target − ε.
        var lo = 0, hi = left.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if left[mid] < target - epsilon { lo = mid + 1 } else { hi = mid }
        }
        if lo < left.count && left[lo] <= target + epsilon { return true }
    }
    return false
}

/// All 2^k subset sums of `values`.
func subsetSums(_ values: [Double]) -> [Double] {
    var sums = [0.0]
    sums.reserveCapacity(1 << values.count)
    for v in values { sums += sums.map { $0 + v } }
    return sums
}
