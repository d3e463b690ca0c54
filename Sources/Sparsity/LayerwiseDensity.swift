import Foundation

/// How a global density is spread over layers (paper §1, App. A.15; DESIGN.md §4).
public enum DensityMethod: String, CaseIterable, Sendable {
    /// `p_l = p`.
    case uniform
    /// Erdős–Rényi-Kernel: `p_l ∝ (c_out + c_in + k_h + k_w) / (c_out·c_in·k_h·k_w)`.
    case erk
    /// Erdős–Rényi without the kernel term: `p_l ∝ (c_out + c_in) / (c_out·c_in)`.
    case er
    /// The same number of non-zeros in every layer: `p_l = x / m_l`.
    case balanced
    /// `p_l = p_1^l`, with `p_1` solving `Σ m_l p_1^l = pN`.
    case pyramidal
    /// Densities read from a JSON file `{"layer.name": density, …}` (rescaled to the target).
    case file
    /// Ratios of a Synflow mask at the target density (pass them in `DensityOptions.layerRatios`,
    /// from `synflowLayerDensities`), with random masks drawn at those densities.
    case erSynflow = "er-synflow"
    /// Ratios of a SNIP mask on data (`snipLayerDensities`).
    case erSNIP = "er-snip"
    /// Ratios of a mask that iterative magnitude pruning produced (read from its checkpoint).
    case erIMP = "er-imp"

    /// Methods whose ratios come from elsewhere (`DensityOptions.layerRatios`).
    public var usesLayerRatios: Bool { [.file, .erSynflow, .erSNIP, .erIMP].contains(self) }
}

/// Options shared by all methods.
public struct DensityOptions: Sendable {
    public var keepFirstDense = false
    public var keepLastDense = false
    /// Per-layer densities for `.file` and the pruner-based methods, by layer name.
    public var layerRatios: [String: Double]? = nil
    public init(keepFirstDense: Bool = false, keepLastDense: Bool = false, layerRatios: [String: Double]? = nil) {
        self.keepFirstDense = keepFirstDense
        self.keepLastDense = keepLastDense
        self.layerRatios = layerRatios
    }
}

/// Per-layer densities whose weighted total `Σ p_l m_l` equals `density · Σ m_l` exactly (up to
/// floating point): layers that a method would push above 1 are made dense and the surplus is
/// spread over the rest, repeating until none saturates.
public func layerwiseDensities(
    _ layers: [MaskableLayer], density: Double, method: DensityMethod, options: DensityOptions = .init()
) throws -> [Double] {
    guard density.isFinite, density > 0, density <= 1 else {
        throw SparsityError("density \(density) is outside (0, 1] (sparsity must be in [0, 1))")
    }
    guard !layers.isEmpty else { throw SparsityError("the model has no maskable layers") }
    let m = layers.map { Double($0.count) }
    let total = m.reduce(0, +)
    let budget = density * total
    var fixed = [Bool](repeating: false, count: layers.count)
    if options.keepFirstDense { fixed[0] = true }
    if options.keepLastDense { fixed[layers.count - 1] = true }
    let fixedWeights = zip(fixed, m).filter(\.0).reduce(0) { $0 + $1.1 }
    guard fixedWeights <= budget + 1e-9 * total else {
        throw SparsityError(String(format: "density %.6g is below what the dense first/last layers alone take (%.6g)", density, fixedWeights / total))
    }
    if density == 1 { return Array(repeating: 1, count: layers.count) }

    switch method {
    case .pyramidal:
        return try pyramidal(m: m, budget: budget, fixed: fixed)
    case .uniform, .erk, .er, .balanced, .file, .erSynflow, .erSNIP, .erIMP:
        let scores: [Double] = try layers.enumerated().map { (i, l) in
            switch method {
            case .uniform: return 1
            case .erk:
                let d = Double(l.outUnits + l.inUnits + (l.isConvolution ? l.kernelH + l.kernelW : 0))
                return d / m[i]
            case .er: return Double(l.outUnits + l.inUnits) / Double(l.outUnits * l.inUnits)
            case .balanced: return 1 / m[i]
            case .file, .erSynflow, .erSNIP, .erIMP:
                let source = method == .file ? "the density file" : "the \(method.rawValue) ratios"
                guard let d = options.layerRatios?[l.name] else {
                    throw SparsityError("\(source): no entry for layer '\(l.name)'")
                }
                guard d.isFinite, d >= 0, d <= 1 else {
                    throw SparsityError("\(source): layer '\(l.name)' has density \(d), outside [0, 1]")
                }
                return d
            default: preconditionFailure()
            }
        }
        if method.usesLayerRatios, let file = options.layerRatios {
            let known = Set(layers.map(\.name))
            if let extra = file.keys.sorted().first(where: { !known.contains($0) }) {
                throw SparsityError("\(method == .file ? "the density file" : "the \(method.rawValue) ratios") name layer '\(extra)', which the model does not have")
            }
        }
        return try scaledWithSaturation(scores: scores, m: m, budget: budget, fixed: fixed)
    }
}

/// `p_l = min(1, ε·s_l)` with ε solving `Σ p_l m_l = budget`; saturated layers are fixed at 1
/// and ε is solved again for the others until none exceeds 1.
func scaledWithSaturation(scores: [Double], m: [Double], budget: Double, fixed: [Bool]) throws -> [Double] {
    var dense = fixed
    while true {
        let denseWeights = zip(dense, m).filter(\.0).reduce(0) { $0 + $1.1 }
        let free = scores.indices.filter { !dense[$0] }
        let weighted = free.reduce(0) { $0 + scores[$1] * m[$1] }
        guard !free.isEmpty, weighted > 0 else {
            throw SparsityError("no layer is left to carry the remaining density")
        }
        let eps = (budget - denseWeights) / weighted
        let saturated = free.filter { eps * scores[$0] > 1 }
        if saturated.isEmpty {
            return scores.indices.map { dense[$0] ? 1 : eps * scores[$0] }
        }
        for i in saturated { dense[i] = true }
    }
}

/// `p_l = p_1^l` (l = 1…L over all maskable layers) for the non-fixed layers, `p_1` by bisection
/// to 1e-12 (the total is increasing in `p_1`).
func pyramidal(m: [Double], budget: Double, fixed: [Bool]) throws -> [Double] {
    let fixedWeights = zip(fixed, m).filter(\.0).reduce(0) { $0 + $1.1 }
    let target = budget - fixedWeights
    func total(_ p1: Double) -> Double {
        m.indices.reduce(0) { fixed[$1] ? $0 : $0 + m[$1] * pow(p1, Double($1 + 1)) }
    }
    var lo = 0.0, hi = 1.0
    guard total(hi) >= target - 1e-9 else { throw SparsityError("pyramidal densities cannot reach the target") }
    for _ in 0..<200 where hi - lo > 1e-12 {
        let mid = (lo + hi) / 2
        if total(mid) < target { lo = mid } else { hi = mid }
    }
    let p1 = (lo + hi) / 2
    return m.indices.map { fixed[$0] ? 1 : pow(p1, Double($0 + 1)) }
}

/// Non-zeros per layer: `round`-ed `p_l m_l` with the largest-remainder rule, so that the total
/// is exactly `round(density · Σ m_l)` and no layer exceeds `m_l`.
public func nonZeroCounts(_ layers: [MaskableLayer], densities: [Double], density: Double) -> [Int] {
    let m = layers.map(\.count)
    let total = Int((density * Double(m.reduce(0, +))).rounded())
    let targets = zip(densities, m).map { $0 * Double($1) }
    var counts = zip(targets, m).map { min($1, Int($0.rounded(.down))) }
    var missing = total - counts.reduce(0, +)
    let order = targets.indices.sorted {
        (targets[$0] - targets[$0].rounded(.down), -$0) > (targets[$1] - targets[$1].rounded(.down), -$1)
    }
    // Largest remainders first; further passes only if layers were full.
    while missing > 0 {
        var progressed = false
        for i in order where missing > 0 && counts[i] < m[i] {
            counts[i] += 1
            missing -= 1
            progressed = true
        }
        if !progressed { break }
    }
    return counts
}
