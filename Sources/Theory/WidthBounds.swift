import Foundation

/// Errors of the theory calculators.
public struct TheoryError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Overparametrization an ER source network needs to contain a target network (Thm 2.2 / A.4,
/// and A.5 for convolutional channels; Thm 2.1 is the case L = 2).
///
/// Target: input dimension `d`, layer widths `n_{T,1} … n_{T,L}` (channels for convolutions),
/// `m_{T,l}` non-zero target weights in layer l. Source layer l (1…L) has density `p_l`; layer 0
/// is the univariate input layer. Then `q_L = 1` and, for l = L−1 … 0,
/// `q_l = ⌈ log(L · m_{T,l+1} · q_{l+1} / δ) / log(1 / (1 − p_{l+1})) ⌉`,
/// and the source widths are `n_{S,0} = q_0 · d`, `n_{S,l} = q_l · n_{T,l}`.
public struct WidthRequirement: Sendable, Equatable {
    /// Overparametrization factors q_0 … q_L.
    public var factors: [Int]
    /// Source widths n_{S,0} … n_{S,L}.
    public var sourceWidths: [Int]
    /// Target weights per layer m_{T,1} … m_{T,L}.
    public var targetWeights: [Int]
}

/// Width requirement for a fully connected (or, with `kernelSizes`, convolutional) target.
/// - Parameters:
///   - target: `[d, n_1, …, n_L]`.
///   - densities: `p_1 … p_L` of the source layers.
///   - kernelSizes: `k_l` (kernel elements) per layer for convolutions; nil for linear layers.
public func widthRequirement(
    target: [Int], densities: [Double], delta: Double, kernelSizes: [Int]? = nil
) throws -> WidthRequirement {
    guard target.count >= 2, target.allSatisfy({ $0 > 0 }) else {
        throw TheoryError("target must list the input size and at least one layer width, all positive")
    }
    let L = target.count - 1
    guard densities.count == L else {
        throw TheoryError("need \(L) densities (one per target layer), got \(densities.count)")
    }
    guard densities.allSatisfy({ $0 > 0 && $0 <= 1 }) else { throw TheoryError("densities must be in (0, 1]") }
    guard delta > 0, delta < 1 else { throw TheoryError("δ must be in (0, 1), got \(delta)") }
    let kernels = kernelSizes ?? Array(repeating: 1, count: L)
    guard kernels.count == L, kernels.allSatisfy({ $0 > 0 }) else {
        throw TheoryError("need \(L) positive kernel sizes")
    }
    let m = (1...L).map { target[$0 - 1] * target[$0] * kernels[$0 - 1] }
    var q = [Int](repeating: 1, count: L + 1)
    for l in stride(from: L - 1, through: 0, by: -1) {
        let p = densities[l]   // p_{l+1}
        if p >= 1 {
            q[l] = 1
        } else {
            let value = log(Double(L) * Double(m[l]) * Double(q[l + 1]) / delta) / log(1 / (1 - p))
            q[l] = max(1, Int(value.rounded(.up)))
        }
    }
    let widths = (0...L).map { $0 == 0 ? q[0] * target[0] : q[$0] * target[$0] }
    return WidthRequirement(factors: q, sourceWidths: widths, targetWeights: m)
}

/// Thm 2.3: a univariate target `φ(wᵀx + b)` on `d` inputs cannot be represented with
/// probability ≥ 1 − δ by a 1-hidden-layer ER(p) source narrower than
/// `log(1 / (1 − (1 − δ)^{1/d})) / log(1 / (1 − p))`.
public func widthLowerBound(inputs d: Int, density p: Double, delta: Double) throws -> Double {
    guard d > 0 else { throw TheoryError("input size must be positive") }
    guard p > 0, p < 1 else { throw TheoryError("density must be in (0, 1) (sparsity in (0, 1))") }
    guard delta > 0, delta < 1 else { throw TheoryError("δ must be in (0, 1), got \(delta)") }
    return log(1 / (1 - pow(1 - delta, 1 / Double(d)))) / log(1 / (1 - p))
}

/// One point of the paper's Fig. 2: the source width of layer 1 for a single-hidden-layer
/// target (128 hidden, 10 outputs) at sparsity s with δ = 0.001 (all layers at density 1 − s).
public func figure2Width(sparsity: Double, hidden: Int = 128, outputs: Int = 10, delta: Double = 0.001) throws -> Int {
    let r = try widthRequirement(target: [1, hidden, outputs], densities: [1 - sparsity, 1 - sparsity], delta: delta)
    return r.sourceWidths[1]
}
