import NN
import Tensor

/// The constructive proof of Thm 2.2 / A.4, carried out numerically.
///
/// Given a random ReLU target MLP `d → n_1 → … → n_L` and an ER source MLP of depth L + 1 with
/// widths `q_0·d, q_1·n_1, …, q_{L−1}·n_{L−1}, n_L`, the construction
/// - makes source layer 0 univariate: neuron (j, r) = relu(x_j + b_0) with weight 1 and
///   `b_0 = −a` for inputs in [a, b], a ≤ 0 (so the ReLU acts as the identity);
/// - for every copy i′ of target neuron i (q_l copies) and every target input j, picks one active
///   ER edge from i′ into block j (the q_{l−1} copies of j) and gives it the target weight
///   `w_T[i, j]`; all other source weights are zero. If block j has no edge to i′, the
///   construction fails;
/// - sets biases `b_S = b_T − b_0 Σ_j w_T[i, j]` in layer 1 and `b_S = b_T` above.
/// Both networks then run through the training engine on random inputs and the largest output
/// difference is measured: the construction is exact, so it must vanish up to float rounding.
public struct ConstructionOutcome: Sendable {
    /// All target links found a representative edge.
    public var succeeded: Bool
    /// Target links without any active edge in the source.
    public var missingLinks: Int
    /// max |f_S(x) − f_T(x)| over the evaluated inputs (nan when the construction failed).
    public var maxError: Double
    /// Source widths used.
    public var sourceWidths: [Int]
}

/// The construction for one target shape and source width, run over many random trials
/// (networks are built once and reused).
public final class ConstructionExperiment {
    public let target: [Int]
    public let densities: [Double]
    public let factors: [Int]
    public let sourceWidths: [Int]
    let inputRange: ClosedRange<Float>
    private let targetNet: Network
    private let source: Network

    /// - Parameters:
    ///   - target: `[d, n_1, …, n_L]`.
    ///   - densities: `p_1 … p_L` of source layers 1 … L.
    ///   - factors: `q_0 … q_{L−1}` (q_L = 1).
    ///   - inputRange: input domain [a, b] with a ≤ 0.
    public init(target: [Int], densities: [Double], factors: [Int], inputRange: ClosedRange<Float> = -1...1) throws {
        let L = target.count - 1
        guard L >= 1, densities.count == L, factors.count == L else {
            throw TheoryError("construction needs L densities and L factors for a target of depth L")
        }
        guard inputRange.lowerBound <= 0 else { throw TheoryError("the input range must contain 0 or lie below it") }
        self.target = target
        self.densities = densities
        self.factors = factors
        self.inputRange = inputRange
        let q = factors + [1]
        sourceWidths = (0...L).map { $0 == 0 ? q[0] * target[0] : q[$0] * target[$0] }
        targetNet = try buildModel(.mlp, classes: target[L], input: (target[0], 1, 1), hidden: Array(target[1..<L]), seed: 0)
        source = try buildModel(.mlp, classes: target[L], input: (target[0], 1, 1), hidden: Array(sourceWidths[0..<L]), seed: 0)
        targetNet.training = false
        source.training = false
    }

    /// One trial: a new random target, a new ER mask, the construction and its check.
    public func run(seed: UInt64, samples: Int = 256) -> ConstructionOutcome {
        let target = self.target, sourceWidths = self.sourceWidths, densities = self.densities
        let inputRange = self.inputRange
        let L = target.count - 1
        let d = target[0]
        let q = factors + [1]
        targetNet.store.initialize(seed: seed)
        // Random target biases (the default initialisation is small but not zero; widen it).
        var rng = Xoshiro256(seed: seed &+ 2)
        for p in targetNet.store.parameters where !p.maskable {
            for i in 0..<p.ref.count { targetNet.store.value(p.ref)[i] = rng.nextFloat() - 0.5 }
        }
        let tp = targetNet.store.parameters, sp = source.store.parameters   // [w1, b1, w2, b2, …]
        source.store.values.update(repeating: 0)
        source.store.mask.update(repeating: 0)
        // Layer 0: univariate copies of each input.
        let b0: Float = -inputRange.lowerBound
        let w0 = source.store.value(sp[0].ref), m0 = source.store.maskValues(sp[0].ref)
        for j in 0..<d {
            for r in 0..<q[0] {
                let row = j * q[0] + r
                w0[row * d + j] = 1
                m0[row * d + j] = 1
            }
        }
        for i in 0..<sourceWidths[0] { source.store.value(sp[1].ref)[i] = b0 }
        for b in sp where !b.maskable {   // biases are dense; weight masks hold the chosen edges
            source.store.maskValues(b.ref).update(repeating: 1, count: b.ref.count)
        }
        var missing = 0
        for l in 1...L {
            let wT = targetNet.store.value(tp[2 * (l - 1)].ref), bT = targetNet.store.value(tp[2 * (l - 1) + 1].ref)
            let wS = source.store.value(sp[2 * l].ref), bS = source.store.value(sp[2 * l + 1].ref)
            let mS = source.store.maskValues(sp[2 * l].ref)
            let nIn = target[l - 1], nOut = target[l]
            let sIn = sourceWidths[l - 1]
            var erRng = Xoshiro256(seed: seed ^ (0xE5 &* UInt64(l + 1)))
            let p = densities[l - 1]
            for i in 0..<nOut {
                for r in 0..<q[l] {
                    let row = i * q[l] + r
                    // The ER mask of this row, drawn on the fly (Bernoulli(p) per entry).
                    var active = [Bool](repeating: false, count: sIn)
                    for c in 0..<sIn { active[c] = erRng.nextDouble() < p }
                    for j in 0..<nIn {
                        let block = (j * q[l - 1])..<((j + 1) * q[l - 1])
                        let candidates = block.filter { active[$0] }
                        guard !candidates.isEmpty else { missing += 1; continue }
                        let pick = candidates[rng.nextIndex(below: candidates.count)]
                        wS[row * sIn + pick] = wT[i * nIn + j]
                        mS[row * sIn + pick] = 1
                    }
                    var bias = bT[i]
                    if l == 1 { for j in 0..<nIn { bias -= b0 * wT[i * nIn + j] } }
                    bS[row] = bias
                }
            }
        }
        guard missing == 0 else {
            return ConstructionOutcome(succeeded: false, missingLinks: missing, maxError: .nan, sourceWidths: sourceWidths)
        }

        // Evaluate both networks with the engine.
        let x = (0..<(samples * d)).map { _ in inputRange.lowerBound + rng.nextFloat() * (inputRange.upperBound - inputRange.lowerBound) }
        targetNet.training = false
        source.training = false
        let yT = Array(x.withUnsafeBufferPointer { targetNet.forward(images: $0.baseAddress!, batch: samples) }.buffer)
        let yS = Array(x.withUnsafeBufferPointer { source.forward(images: $0.baseAddress!, batch: samples) }.buffer)
        let err = zip(yT, yS).reduce(0.0) { max($0, Double(abs($1.0 - $1.1))) }
        return ConstructionOutcome(succeeded: true, missingLinks: 0, maxError: err, sourceWidths: sourceWidths)
    }
}

/// Runs the construction once (see `ConstructionExperiment`).
public func runConstruction(
    target: [Int], densities: [Double], factors: [Int], seed: UInt64, samples: Int = 256,
    inputRange: ClosedRange<Float> = -1...1
) throws -> ConstructionOutcome {
    try ConstructionExperiment(target: target, densities: densities, factors: factors, inputRange: inputRange)
        .run(seed: seed, samples: samples)
}
